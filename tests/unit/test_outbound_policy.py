"""Which addresses and URLs webhooks may reach (no network)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from aggregates.errors import InvalidValue
from commands.url_policy import check_webhook_url, in_networks
from infra.outbound import RefusedAddress, address_refusal

LOOPBACK = [ip_network("127.0.0.0/8")]


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("172.16.0.1", "172.16.0.1 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("100.64.0.1", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("169.254.1.1", "169.254.1.1 is a link-local address"),
        ("fd00:ec2::254", "fd00:ec2::254 is a cloud metadata address"),
        ("::1", "::1 is a loopback address"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1 is an IPv4-mapped form of 127.0.0.1, a loopback"),
        ("::ffff:10.0.0.1", "::ffff:10.0.0.1 is an IPv4-mapped form of 10.0.0.1, a private"),
        ("fc00::1", "fc00::1 is a unique-local address"),
        ("fd12:3456::1", "fd12:3456::1 is a unique-local address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("::", ":: is an unspecified address"),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("ff02::1", "ff02::1 is a multicast address"),
        ("240.0.0.1", "240.0.0.1 is a"),
        ("255.255.255.255", "255.255.255.255 is a"),
        ("64:ff9b::a00:1", "64:ff9b::a00:1 is a NAT64 address for 10.0.0.1, a private"),
        ("2002:a00:1::", "2002:a00:1:: is a 6to4 address for 10.0.0.1, a private"),
        ("2002:7f00:1::", "2002:7f00:1:: is a 6to4 address for 127.0.0.1, a loopback"),
    ],
)
def test_private_and_special_addresses_are_refused_with_a_reason(address: str, why: str) -> None:
    reason = address_refusal(ip_address(address), ())
    assert reason is not None
    assert reason.startswith(why)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:4700::1", "8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_admitted(address: str) -> None:
    assert address_refusal(ip_address(address), ()) is None


def test_the_allow_list_admits_what_it_names_and_nothing_else() -> None:
    for address in ("127.0.0.1", "127.9.9.9", "::ffff:127.0.0.1"):
        assert address_refusal(ip_address(address), LOOPBACK) is None
    assert address_refusal(ip_address("::1"), LOOPBACK) == "::1 is a loopback address"
    assert address_refusal(ip_address("10.0.0.1"), LOOPBACK) is not None
    assert address_refusal(ip_address("::1"), [ip_network("::1/128")]) is None
    assert not in_networks(ip_address("10.0.0.1"), [ip_network("::/0")])


def test_refused_address_names_host_address_and_reason() -> None:
    by_name = RefusedAddress("hooks.test", "10.0.0.1", "10.0.0.1 is a private address")
    # aiohttp wraps an OSError from the resolver; a refusal must reach the caller as itself.
    assert not isinstance(by_name, OSError)
    assert str(by_name) == "hooks.test: 10.0.0.1 is a private address"
    assert (by_name.host, by_name.address) == ("hooks.test", "10.0.0.1")
    literal = RefusedAddress("127.0.0.1", "127.0.0.1", "127.0.0.1 is a loopback address")
    assert str(literal) == "127.0.0.1 is a loopback address"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
        "https:///nohost",
        "https://hooks.example.com:99999/",
        "https://[fe80::1%25eth0]/",
        "http://hooks.example.com/",
        "https://127.0.0.1/",
        "https://[::ffff:10.0.0.1]/",
        "https://localhost/",
        "https://db.internal/",
        "https://printer.local./",
    ],
)
def test_static_rules_refuse(url: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        check_webhook_url(url)
    assert refused.value.details["field"] == "url"


def test_plain_http_only_inside_the_allow_list() -> None:
    loopback = ip_address("127.0.0.1")
    assert check_webhook_url("http://127.0.0.1:9/", LOOPBACK) == "http://127.0.0.1:9/"
    assert check_webhook_url("http://recv.test:9/", LOOPBACK, resolved=[loopback])
    assert check_webhook_url("http://localhost:9/", LOOPBACK, resolved=[loopback])
    with pytest.raises(InvalidValue, match="https"):
        check_webhook_url("http://recv.test:9/", LOOPBACK)  # not resolved: not known inside
    with pytest.raises(InvalidValue, match="https"):
        check_webhook_url("http://recv.test:9/", LOOPBACK, resolved=[loopback, ip_address("::1")])
    with pytest.raises(InvalidValue, match="https"):
        check_webhook_url("http://93.184.215.14/", LOOPBACK)
    assert check_webhook_url("https://hooks.example.com/x") == "https://hooks.example.com/x"
