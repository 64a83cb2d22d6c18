"""The webhook client against real HTTP receivers on loopback: the SSRF guard
refuses at connect time, the allow-list admits, redirects are not followed, and
the address connected to is the address checked."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme
from yarl import URL

from commands.url_policy import Network, is_public_address
from infra.outbound import RefusedAddress, SendFailed, WebhookClient, resolve_admitted

pytestmark = pytest.mark.anyio

LOOPBACK: list[Network] = [ipaddress.ip_network("127.0.0.0/8")]
HOSTNAME = socket.gethostname()


@dataclass
class Log:
    """What a receiver got; written by its handler threads."""

    redirect_to: str | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Receiver:
    """A real HTTP server; every request it gets is recorded."""

    server: ThreadingHTTPServer
    log: Log

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def headers(self) -> list[dict[str, str]]:
        with self.log.lock:
            return list(self.log.headers)

    def requests(self) -> list[dict[str, Any]]:
        with self.log.lock:
            return list(self.log.seen)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's stream stays open to inspect
    log: ClassVar[Log]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with self.log.lock:
            self.log.seen.append({"path": self.path, "host": self.headers["host"], "body": body})
            self.log.headers.append({k.lower(): v for k, v in self.headers.items()})
        if self.log.redirect_to is not None:
            self.send_response(302)
            self.send_header("location", self.log.redirect_to)
        else:
            self.send_response(200)
        self.send_header("set-cookie", "session=of-one-tenant")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextmanager
def _receiver(host: str = "127.0.0.1", redirect_to: str | None = None) -> Iterator[Receiver]:
    class Handler(_Handler):
        pass

    Handler.log = Log(redirect_to)
    server_class = _V6Server if ":" in host else ThreadingHTTPServer
    server = server_class((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Receiver(server, Handler.log)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with _receiver() as r:
        yield r


@pytest.fixture
def receiver_v6() -> Iterator[Receiver | None]:
    """A receiver on [::1], or None where this machine has no IPv6 loopback."""
    if not socket.has_ipv6:
        yield None
        return
    try:
        server = _receiver("::1")
        r = server.__enter__()
    except OSError:
        yield None
        return
    try:
        yield r
    finally:
        server.__exit__(None, None, None)


async def _refused(url: str, allowed: list[Network] | tuple[()] = ()) -> RefusedAddress:
    # A tripwire first: if the guard admitted this target, fail without sending
    # anything to it (no traffic to private ranges, ever).
    parsed = URL(url)
    assert parsed.raw_host is not None
    with pytest.raises(RefusedAddress):
        await resolve_admitted(parsed.raw_host, parsed.port or 80, allowed)
    async with WebhookClient(allowed, timeout=5) as client:
        with pytest.raises(RefusedAddress) as refused:
            await client.post(url, b"{}", {})
    return refused.value


async def test_the_host_name_here_resolves_to_a_non_public_address() -> None:
    # What the host-name tests below rely on (/etc/hosts maps it to loopback).
    infos = socket.getaddrinfo(HOSTNAME, 80, type=socket.SOCK_STREAM)
    addresses = {ipaddress.ip_address(i[4][0]) for i in infos}
    assert addresses
    assert not any(is_public_address(a) for a in addresses)
    assert all(any(a in n for n in LOOPBACK) for a in addresses), addresses


async def test_loopback_and_private_targets_are_refused_before_connecting(
    receiver: Receiver, receiver_v6: Receiver | None
) -> None:
    v6_port = receiver_v6.port if receiver_v6 is not None else receiver.port
    cases = {
        f"http://127.0.0.1:{receiver.port}/hook": "127.0.0.1 is a loopback address",
        f"http://[::1]:{v6_port}/hook": "::1 is a loopback address",
        f"http://[::ffff:127.0.0.1]:{receiver.port}/hook": "::ffff:127.0.0.1 is an IPv4-mapped",
        f"http://{HOSTNAME}:{receiver.port}/hook": f"{HOSTNAME}: 127.",
        f"https://{HOSTNAME}:{receiver.port}/hook": f"{HOSTNAME}: 127.",
        "http://10.0.0.1/hook": "10.0.0.1 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a cloud metadata",
    }
    for url, why in cases.items():
        refused = await _refused(url)
        assert str(refused).startswith(why), (url, str(refused))
    assert receiver.requests() == []
    if receiver_v6 is not None:
        assert receiver_v6.requests() == []


async def test_the_allow_list_admits_loopback(
    receiver: Receiver, receiver_v6: Receiver | None
) -> None:
    async with WebhookClient(LOOPBACK, timeout=5) as client:
        by_ip = await client.post(f"http://127.0.0.1:{receiver.port}/a", b"1", {})
        by_name = await client.post(f"http://{HOSTNAME}:{receiver.port}/b", b"2", {})
        assert (by_ip.status_code, by_name.status_code) == (200, 200)
        assert by_ip.body == b"ok"
        if receiver_v6 is not None:  # ::1 is not in 127.0.0.0/8
            with pytest.raises(RefusedAddress, match="::1 is a loopback address"):
                await client.post(f"http://[::1]:{receiver_v6.port}/c", b"3", {})
    assert receiver.requests() == [
        {"path": "/a", "host": f"127.0.0.1:{receiver.port}", "body": b"1"},
        {"path": "/b", "host": f"{HOSTNAME}:{receiver.port}", "body": b"2"},
    ]
    if receiver_v6 is not None:
        assert receiver_v6.requests() == []
        async with WebhookClient([ipaddress.ip_network("::1/128")], timeout=5) as client:
            response = await client.post(f"http://[::1]:{receiver_v6.port}/d", b"4", {})
        assert response.status_code == 200
        assert [r["path"] for r in receiver_v6.requests()] == ["/d"]


async def test_redirects_are_not_followed(receiver: Receiver) -> None:
    with _receiver(redirect_to=f"http://127.0.0.1:{receiver.port}/elsewhere") as redirecting:
        async with WebhookClient(LOOPBACK, timeout=5) as client:
            response = await client.post(f"http://127.0.0.1:{redirecting.port}/in", b"x", {})
        assert response.status_code == 302
        assert [r["path"] for r in redirecting.requests()] == ["/in"]
    assert receiver.requests() == []


async def test_other_spellings_of_loopback_and_bad_host_names_send_nothing(
    receiver: Receiver,
) -> None:
    # Numeric IPv4 forms that the C resolver maps onto 127.0.0.1, and host
    # names that do not encode: each is refused or fails as SendFailed, with
    # nothing sent (aiohttp connects to an IP literal without the resolver,
    # so a form it did not treat as one must still reach the guard).
    port = receiver.port
    urls = [
        f"http://127.1:{port}/short",
        f"http://2130706433:{port}/decimal",
        f"http://0177.0.0.1:{port}/octal",
        f"http://0x7f000001:{port}/hex",
        f"http://127.0.0.1.:{port}/trailing-dot",
        f"https://{'a' * 64}.example/long-label",
        "https://exa\u00admple.com/soft-hyphen",
    ]
    async with WebhookClient((), timeout=5) as client:
        for url in urls:
            with pytest.raises((RefusedAddress, SendFailed)):
                await client.post(url, b"{}", {})
    assert receiver.requests() == []


async def test_no_cookie_is_kept_and_answers_are_read_raw_up_to_the_cap(
    receiver: Receiver,
) -> None:
    # One pool serves every tenant's endpoints: a cookie one receiver sets must
    # not go back to it (or anywhere), and the answer is taken as sent, capped.
    url = f"http://{HOSTNAME}:{receiver.port}/jar"  # cookies of IP hosts are never kept
    async with WebhookClient(LOOPBACK, timeout=5) as client:
        first = await client.post(url, b"1", {"content-type": "application/json"})
        second = await client.post(url, b"2", {}, read_at_most=1)
    assert (first.body, second.body) == (b"ok", b"o")
    sent = receiver.headers()
    assert len(sent) == 2
    assert all("cookie" not in h and "accept-encoding" not in h for h in sent), sent
    assert sent[0]["content-type"] == "application/json"


def _fake_resolver(answers: dict[str, list[str]], calls: list[str]) -> Callable[..., Any]:
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    return getaddrinfo


async def test_the_checked_address_is_the_one_connected_to(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hooks.test resolves (once) to 127.0.0.2, where nothing listens, then
    # 127.0.0.1: the client connects by address, falls back to the next one,
    # and never looks the name up again; the Host header stays the name.
    calls: list[str] = []
    resolver = _fake_resolver({"hooks.test": ["127.0.0.2", "127.0.0.1"]}, calls)
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
    url = f"http://hooks.test:{receiver.port}/pinned"
    async with WebhookClient(LOOPBACK, timeout=5) as client:
        response = await client.post(url, b"p", {})
    assert response.status_code == 200
    assert calls == ["hooks.test"]
    assert receiver.requests() == [
        {"path": "/pinned", "host": f"hooks.test:{receiver.port}", "body": b"p"}
    ]


async def test_an_answer_mixing_public_and_private_addresses_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    resolver = _fake_resolver({"rebind.test": ["93.184.215.14", "127.0.0.1"]}, calls)
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
    with pytest.raises(RefusedAddress) as refused:
        await resolve_admitted("rebind.test", 443, ())
    assert str(refused.value) == "rebind.test: 127.0.0.1 is a loopback address"
    assert refused.value.address == "127.0.0.1"


async def test_a_name_that_does_not_resolve_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", _fake_resolver({}, []))
    async with WebhookClient((), timeout=5) as client:
        with pytest.raises(SendFailed, match=r"cannot resolve nowhere\.test"):
            await client.post("https://nowhere.test/hook", b"{}", {})


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for hooks.test from a throwaway CA that nothing trusts."""
    issued = trustme.CA().issue_cert("hooks.test")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_tls_uses_the_host_name_not_the_address(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connected by address, TLS still sends SNI for the URL's host name and
    # verifies the certificate (one from an untrusted CA fails verification).
    cert, key = certificate
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    calls: list[str] = []
    monkeypatch.setattr(
        asyncio.get_running_loop(),
        "getaddrinfo",
        _fake_resolver({"hooks.test": ["127.0.0.1"]}, calls),
    )
    try:
        async with WebhookClient(LOOPBACK, timeout=5) as client:
            with pytest.raises(SendFailed, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post(f"https://hooks.test:{port}/tls", b"{}", {})
        await asyncio.to_thread(thread.join, 10)
    finally:
        listener.close()
    assert server_names == ["hooks.test"]
    assert calls == ["hooks.test"]
