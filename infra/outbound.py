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
host name: httpcore starts TLS on the connected stream with
``server_hostname`` taken from the request's origin, not from the address.
Redirects are not followed and no proxy is taken from the environment.

Addresses inside the operator's allow-list (``CHRONIK_WEBHOOK_ALLOWED_NETWORKS``,
``Settings.webhook_allowed_networks``) are admitted: local development and tests
run receivers on loopback.

What a caller of :func:`open_webhook_client` catches:

- :class:`RefusedAddress` when the guard refused the target; it *is* an
  ``httpx.ConnectError`` (so a plain ``except httpx.HTTPError`` still sees it),
  raised unchanged through httpx, with ``host``, ``address`` and ``reason``
  attributes and a message such as ``"hooks.example.net: 10.0.0.1 is a private
  address"``. Catch it before ``httpx.HTTPError`` to record "refused: <reason>".
- ``httpx.ConnectError`` when the name does not resolve or no admitted address
  accepts the connection; ``httpx.ConnectTimeout`` when resolving and connecting
  together take longer than the connect timeout; the other ``httpx.HTTPError``
  subclasses (read/write timeouts, protocol errors) as usual.

:func:`check_webhook_target` is the registration-time check (see there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Iterable, Sequence

import anyio
import httpcore
import httpx

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
    "GuardedNetworkBackend",
    "RefusedAddress",
    "address_refusal",
    "check_webhook_target",
    "open_webhook_client",
    "resolve_admitted",
]

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class RefusedAddress(httpx.ConnectError):
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


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the SSRF guard in ``connect_tcp``: the
    address checked is the address connected to. The connect timeout bounds
    the whole connect phase: the lookup and every address tried."""

    def __init__(
        self, allowed: Sequence[Network], inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        options = list(socket_options) if socket_options is not None else None
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve_admitted(host, port, self._allowed)
                failure: httpcore.ConnectError | None = None
                for address in addresses:
                    try:
                        return await self._inner.connect_tcp(
                            address, port, local_address=local_address, socket_options=options
                        )
                    except httpcore.ConnectError as exc:
                        failure = exc
                assert failure is not None  # resolve_admitted returns at least one address
                raise failure
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except (OSError, UnicodeError) as exc:  # the lookup failed
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with its connection pool swapped for one on the
    guarded backend. httpx takes no network backend, and an adapter of our own
    would copy its request/response conversion and exception mapping (more
    private behaviour than the one attribute replaced here). ``_pool`` is checked
    before it is replaced, so an httpx that renamed it fails here, loudly,
    instead of sending unguarded."""

    def __init__(
        self, allowed: Sequence[Network], *, ssl_context: ssl.SSLContext, limits: httpx.Limits
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport changed: cannot install the SSRF guard")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetworkBackend(allowed),
        )


def open_webhook_client(
    allowed: Sequence[Network], *, timeout: float, max_connections: int = 100
) -> httpx.AsyncClient:
    """An httpx client for webhook deliveries: the SSRF guard on every connect,
    no redirects, no proxies or certificates from the environment, ``timeout``
    seconds for each of connect (lookup included), read, write and pool."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    transport = _GuardedTransport(
        allowed, ssl_context=httpx.create_ssl_context(trust_env=False), limits=limits
    )
    return httpx.AsyncClient(
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
    )


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
    counts is the one at connect time (:func:`open_webhook_client`).
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
