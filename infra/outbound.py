"""Outbound HTTP for webhooks, with the SSRF guard where it counts: at connect time.

A webhook URL names a host chosen by a tenant; the sender must never be made to
call the machine it runs on, its private network or a cloud metadata service.
Checking the URL once at registration is not enough: DNS answers change (and a
rebinding attacker changes them between a check and the connect). So the client
this module builds resolves the host itself, judges *every* address the name
resolves to (:func:`address_refusal`: loopback, private, link-local, CGNAT,
metadata, unique-local, multicast, reserved, unspecified; IPv4-mapped, NAT64,
6to4 and Teredo forms by the IPv4 address inside), refuses the request if any
is refused, and connects to an admitted address it checked, with no second
lookup. TLS still verifies the certificate for, and sends SNI of, the URL's
host name: aiohttp connects to the address and starts TLS with
``server_hostname`` taken from the URL. Redirects are not followed and no proxy
is taken from the environment.

Addresses inside the operator's allow-list (``CHRONIK_WEBHOOK_ALLOWED_NETWORKS``,
``Settings.webhook_allowed_networks``) are admitted: local development and tests
run receivers on loopback.

What a caller of :meth:`WebhookClient.post` catches:

- :class:`RefusedAddress` when the guard refused the target, with ``host``,
  ``address`` and ``reason`` attributes and a message such as
  ``"hooks.example.net: 10.0.0.1 is a private address"``; record it as
  "refused: <reason>".
- :class:`SendFailed` when the name does not resolve, no admitted address
  accepts the connection, TLS fails or the answer is not HTTP.
- ``TimeoutError`` when no whole answer came within the client's timeout.

:func:`check_webhook_target` is the registration-time check (see there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Self

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from aggregates.errors import InvalidValue
from commands.url_policy import (
    Address,
    Network,
    check_webhook_url,
    in_networks,
    refusal_reason,
    webhook_url_parts,
)

__all__ = [
    "Answer",
    "GuardedResolver",
    "RefusedAddress",
    "SendFailed",
    "WebhookClient",
    "address_refusal",
    "check_webhook_target",
    "resolve_admitted",
]

# A name's judged addresses are reused for new connections this long.
DNS_CACHE_SECONDS: Final = 10


class RefusedAddress(Exception):
    """The SSRF guard refused to connect: ``host`` is, or resolves to,
    ``address``, which is not admitted for ``reason``."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        # A literal IP host is named by the reason already.
        super().__init__(reason if _literal(host) is not None else f"{host}: {reason}")


def address_refusal(address: Address, allowed: Sequence[Network]) -> str | None:
    """None if a webhook may be sent to ``address``, else why not
    ("127.0.0.1 is a loopback address"). The allow-list admits anything in it."""
    if in_networks(address, allowed):
        return None
    return refusal_reason(address)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _distinct(addresses: Iterable[Address]) -> list[Address]:
    return list(dict.fromkeys(addresses))


async def resolve_admitted(host: str, port: int, allowed: Sequence[Network]) -> list[str]:
    """The addresses ``host`` resolves to, in resolver order, if every one is
    admitted; a literal IP address is taken as it is. Raises RefusedAddress if
    any address is refused (an answer that mixes public and private addresses
    is a rebinding trick, not a choice), OSError if the name does not resolve."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = _distinct(ipaddress.ip_address(info[4][0]) for info in infos)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for address in addresses:
        reason = address_refusal(address, allowed)
        if reason is not None:
            raise RefusedAddress(host, str(address), reason)
    return [str(a) for a in addresses]


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the SSRF guard: every address a name resolves to
    is judged, and the connector connects only to those it is given here. A
    refusal is raised as :class:`RefusedAddress`, which aiohttp passes through
    unchanged (it wraps only ``OSError``)."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve_admitted(host, port, self._allowed)
        except UnicodeError as exc:  # a label too long or empty: aiohttp wraps only OSError
            raise OSError(f"{host} is not a valid host name: {exc}") from exc
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status, its ``retry-after`` header and at most
    the first ``read_at_most`` bytes of its body, undecoded."""

    status_code: int
    retry_after: str | None
    body: bytes


class SendFailed(Exception):
    """No HTTP answer: the name did not resolve, the connection or TLS failed,
    or the answer was not HTTP. The message says which."""


class WebhookClient:
    """POSTs webhooks over one pool of keep-alive connections (aiohttp: its
    per-request cost is a tenth of httpx's, measured in ``bench.webhooks``).

    The guard: names are resolved by :class:`GuardedResolver`; a literal IP
    address, which aiohttp connects to without asking the resolver, is judged
    here before the request. Redirects are not followed, no proxy, certificate
    or netrc is taken from the environment (certifi's roots, as httpx used), no
    cookie is kept (the pool is shared by every tenant's endpoints), and answers
    are read undecoded (``accept-encoding`` is not sent). ``timeout`` bounds each
    request from the wait for a connection to the last byte read."""

    def __init__(
        self, allowed: Sequence[Network], *, timeout: float, max_connections: int = 100
    ) -> None:
        self._allowed = tuple(allowed)
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._allowed),
            ssl=ssl.create_default_context(cafile=certifi.where()),
            limit=self._max_connections,
            ttl_dns_cache=DNS_CACHE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=False,
            skip_auto_headers=("accept-encoding",),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, read_at_most: int = 1024
    ) -> Answer:
        """Raises RefusedAddress if the guard refused the target, SendFailed
        if no HTTP answer came, TimeoutError if none came in time."""
        if self._session is None:
            raise RuntimeError("WebhookClient used outside 'async with'")
        try:
            target = URL(url)
        except ValueError as exc:
            raise SendFailed(f"invalid url: {exc}") from exc
        if target.raw_host is not None and _literal(target.raw_host) is not None:
            await resolve_admitted(target.raw_host, target.port or 0, self._allowed)
        try:
            async with self._session.post(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                taken = await _read_at_most(response.content, read_at_most)
                return Answer(response.status, response.headers.get("retry-after"), taken)
        except aiohttp.ClientConnectorDNSError as exc:
            raise SendFailed(f"cannot resolve {target.raw_host}: {exc.os_error}") from exc
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise SendFailed(why) from exc


async def _read_at_most(content: aiohttp.StreamReader, cap: int) -> bytes:
    taken = bytearray()
    while len(taken) < cap:
        chunk = await content.read(cap - len(taken))
        if not chunk:
            break
        taken += chunk
    return bytes(taken)


def _resolve(host: str, port: int) -> list[Address]:
    """The addresses ``host`` resolves to now; none if it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise InvalidValue("url host is not a valid host name", field="url") from None
    except OSError:
        return []
    return _distinct(ipaddress.ip_address(info[4][0]) for info in infos)


def check_webhook_target(url: str, allowed: Sequence[Network]) -> str:
    """The registration-time check (``commands.ports.UrlGuard``): the static
    rules of ``commands.url_policy.check_webhook_url``, then every address the
    host name resolves to must be admitted, else InvalidValue (field ``url``).

    A name that does not resolve now is accepted: DNS may not be reachable
    here, and it can change after registration anyway. This check spares
    tenants an endpoint that could never be delivered to; the guard that
    counts is the one at connect time (:class:`WebhookClient`).
    Plain http is accepted only when every address is inside ``allowed``.
    Blocking (``socket.getaddrinfo``): call it from a worker thread.
    """
    _, host, port = webhook_url_parts(url)
    addresses = [] if _literal(host) is not None else _resolve(host, port)
    check_webhook_url(url, allowed, resolved=addresses)
    refusals = [r for a in addresses if (r := address_refusal(a, allowed)) is not None]
    if refusals:
        raise InvalidValue(
            f"url resolves to a private or reserved address ({'; '.join(refusals)})",
            field="url",
        )
    return url
