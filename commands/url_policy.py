"""Which webhook URLs may be registered. The address a hostname resolves to is
checked again at connect time by the sender (the SSRF guard in infra); this is
the check that needs no network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from aggregates.errors import InvalidValue

__all__ = ["Network", "check_webhook_url", "is_public_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public_address(address.ipv4_mapped)
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _METADATA
        or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT)
    )


def check_webhook_url(url: str, allowed: Sequence[Network] = ()) -> str:
    """https to a public host; plain http and private addresses only inside
    the operator's allow-list (local development and tests)."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
        raise InvalidValue("url must be an https URL without credentials", field="url")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    allowed_literal = literal is not None and any(literal in net for net in allowed)
    if parts.scheme == "http" and not allowed_literal:
        raise InvalidValue("url must use https", field="url")
    if literal is not None and not allowed_literal and not is_public_address(literal):
        raise InvalidValue("url points at a private or reserved address", field="url")
    if literal is None and host.rstrip(".").endswith(("localhost", ".internal", ".local")):
        raise InvalidValue("url points at a local host name", field="url")
    return url
