"""Which webhook URLs may be registered, and which addresses webhooks may reach.

Pure rules, no network: the host name a URL names is resolved by infra (at
registration, ``infra.outbound.check_webhook_target``) and the address that is
actually connected to is checked again at connect time (the SSRF guard in
``infra.outbound``); both judge addresses with :func:`refusal_reason`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from aggregates.errors import InvalidValue

__all__ = [
    "Address",
    "Network",
    "check_webhook_url",
    "in_networks",
    "is_public_address",
    "refusal_reason",
    "webhook_url_parts",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use translation
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local")


def _embedded_ipv4(address: Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 address stands for, how it embeds it, and
    whether that IPv4 address alone decides (mapped and NAT64 addresses reach
    exactly it; 6to4 and Teredo go through relays, so both are judged)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form of", address.ipv4_mapped, True
    if address in _NAT64:
        return "a NAT64 address for", ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF), True
    if address.sixtofour is not None:
        return "a 6to4 address for", address.sixtofour, False
    if address.teredo is not None:
        return "a Teredo address for", address.teredo[1], False
    return None


def _kind(address: Address) -> str | None:
    """What makes ``address`` unfit for webhooks, as a noun phrase; None if public."""
    v6 = isinstance(address, ipaddress.IPv6Address)
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    checks: list[tuple[bool, str]] = [
        (address in _METADATA, "a cloud metadata address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (not v6 and address in _CGNAT, "a shared (carrier-grade NAT) address"),
        (v6 and address in _UNIQUE_LOCAL, "a unique-local address"),
        (site_local, "a site-local address"),
        (v6 and address in _NAT64_LOCAL, "a local-use NAT64 address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a globally routable address"),
    ]
    return next((kind for refused, kind in checks if refused), None)


def _show(address: Address) -> str:
    """As people write it: ``::ffff:127.0.0.1``, not ``::ffff:7f00:1``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def refusal_reason(address: Address) -> str | None:
    """Why no webhook may be sent to ``address``, as a sentence ("127.0.0.1 is a
    loopback address"); None for a public address. An IPv6 address that stands
    for an IPv4 one (mapped, NAT64, 6to4, Teredo) is judged by that IPv4 address
    too: a mapped or NAT64 address only by it."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        how, inner, decides = embedded
        inner_kind = _kind(inner)
        if inner_kind is not None:
            return f"{_show(address)} is {how} {inner}, {inner_kind}"
        if decides:
            return None
    kind = _kind(address)
    return None if kind is None else f"{_show(address)} is {kind}"


def is_public_address(address: Address) -> bool:
    return refusal_reason(address) is None


def in_networks(address: Address, networks: Sequence[Network]) -> bool:
    """Inside one of ``networks`` (the operator's allow-list); an IPv4-mapped
    IPv6 address counts as the IPv4 address it maps."""
    candidates: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def webhook_url_parts(url: str) -> tuple[SplitResult, str, int]:
    """The URL's shape alone: http(s), a host, no credentials, a valid port.
    Returns the split URL, its host (lower case, no brackets) and its port."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host or parts.username or parts.password:
        raise InvalidValue("url must be an https URL without credentials", field="url")
    try:
        port = parts.port
    except ValueError:
        raise InvalidValue("url has an invalid port", field="url") from None
    if ":" in host and _literal(host) is None:
        raise InvalidValue("url host is not a valid IP address", field="url")
    return parts, host, port if port is not None else (443 if parts.scheme == "https" else 80)


def check_webhook_url(
    url: str, allowed: Sequence[Network] = (), *, resolved: Sequence[Address] = ()
) -> str:
    """https to a public host; plain http, private addresses and local host
    names only inside the operator's allow-list (local development and tests).

    ``resolved`` are the addresses the URL's host name resolved to, if the
    caller looked: a name counts as inside the allow-list when it resolved and
    every address it resolved to is inside. An IP literal is judged as itself.
    """
    parts, host, _ = webhook_url_parts(url)
    literal = _literal(host)
    addresses = [literal] if literal is not None else list(resolved)
    inside = bool(addresses) and all(in_networks(a, allowed) for a in addresses)
    if parts.scheme == "http" and not inside:
        raise InvalidValue(
            "url must use https (plain http only to addresses in the allow-list)", field="url"
        )
    if literal is not None and not inside:
        reason = refusal_reason(literal)
        if reason is not None:
            raise InvalidValue(
                f"url points at a private or reserved address ({reason})", field="url"
            )
    name = host.rstrip(".")
    if literal is None and not inside and (name == "localhost" or name.endswith(_LOCAL_SUFFIXES)):
        raise InvalidValue("url points at a local host name", field="url")
    return url
