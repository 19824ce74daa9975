"""Callback addresses: every non-public range refused, IPv6 spellings of IPv4 unwrapped."""

from __future__ import annotations

import ipaddress

import pytest

from jobs.errors import CallbackRefused
from notices.addresses import NON_PUBLIC_V4, NON_PUBLIC_V6, embedded_ipv4, non_public_reason
from notices.webhooks import CallbackPolicy, WebhookSender

# Every spelling the hostile round found accepted, then more of each range.
NON_PUBLIC = {
    # the issue's spellings
    "::7f00:1": "IPv4-compatible",
    "::ffff:0:7f00:1": "IPv4-translated",
    "64:ff9b::7f00:1": "loopback",
    "2002:7f00:1::": "6to4",
    "fec0::1": "site-local",
    # IPv4
    "0.0.0.0": "this network", "0.1.2.3": "this network", "10.0.0.1": "private",
    "10.255.255.255": "private", "100.64.0.1": "CGNAT", "100.127.255.254": "CGNAT",
    "127.0.0.1": "loopback", "127.255.255.254": "loopback", "169.254.169.254": "link-local",
    "172.16.0.1": "private", "172.31.255.255": "private", "192.0.0.8": "IETF",
    "192.0.0.170": "IETF", "192.0.2.1": "documentation", "192.31.196.1": "AS112",
    "192.52.193.1": "AMT", "192.88.99.1": "6to4 relay", "192.168.1.1": "private",
    "192.175.48.1": "AS112", "198.18.0.1": "benchmarking", "198.19.255.255": "benchmarking",
    "198.51.100.7": "documentation", "203.0.113.9": "documentation", "224.0.0.1": "multicast",
    "239.255.255.250": "multicast", "240.0.0.1": "reserved", "255.255.255.254": "reserved",
    "255.255.255.255": "broadcast",
    # IPv6 proper
    "::": "unspecified", "::1": "loopback", "100::1": "discard-only",
    "2001::1": "Teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:2::1": "benchmarking", "2001:10::1": "ORCHID", "2001:20::1": "ORCHIDv2",
    "2001:1::1": "IETF", "2001:db8::1": "documentation", "3fff::1": "documentation",
    "5f00::1": "SRv6", "fc00::1": "unique-local", "fd12:3456::1": "unique-local",
    "fe80::1": "link-local", "febf::1": "link-local", "fec0::": "site-local",
    "feff::1": "site-local", "ff02::1": "multicast", "ff0e::1": "multicast",
    "4000::1": "reserved", "1::1": "reserved", "e000::1": "reserved",
    "64:ff9b:1::1": "local-use NAT64", "64:ff9b:1:ffff::a00:1": "local-use NAT64",
    # IPv4 embedded in IPv6, each way: mapped, translated, compatible, NAT64, 6to4, Teredo
    "::ffff:127.0.0.1": "loopback", "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local", "::ffff:100.64.0.1": "CGNAT",
    "::ffff:0:10.0.0.1": "IPv4-translated", "::ffff:0:0.0.0.0": "IPv4-translated",
    "::10.0.0.1": "IPv4-compatible", "::8.8.8.8": "IPv4-compatible",
    "64:ff9b::10.0.0.1": "private", "64:ff9b::169.254.169.254": "link-local",
    "64:ff9b::a9fe:a9fe": "link-local", "64:ff9b::c000:201": "documentation",
    "2002:a9fe:a9fe::1": "6to4", "2002:c0a8:101::": "6to4", "2002:808:808::1": "6to4",
}  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.15.255.255",
    "172.32.0.0", "192.0.3.1", "192.167.255.255", "198.17.255.255", "198.20.0.0",
    "223.255.255.255", "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450::1",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "64:ff9b::93.184.216.34",
]  # fmt: skip


@pytest.mark.parametrize(("text", "range_name"), list(NON_PUBLIC.items()))
def test_every_non_public_spelling_is_refused_naming_its_range(text: str, range_name: str) -> None:
    reason = non_public_reason(ipaddress.ip_address(text))
    assert reason is not None and range_name in reason


@pytest.mark.parametrize("text", PUBLIC)
def test_a_public_address_is_accepted_including_ipv4_reached_through_nat64(text: str) -> None:
    assert non_public_reason(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize(
    ("network", "name"), [*NON_PUBLIC_V4, *NON_PUBLIC_V6], ids=lambda v: str(v)
)
def test_the_first_and_last_address_of_every_listed_range_is_refused(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, name: str
) -> None:
    for address in (network[0], network[-1]):
        assert non_public_reason(address) is not None, (address, name)


def test_ipaddress_is_global_alone_would_have_let_the_issues_spellings_through() -> None:
    # The reason for the table: these were accepted as public before it.
    fooled = [t for t in ("::7f00:1", "::ffff:0:7f00:1", "2002:7f00:1::")
              if ipaddress.ip_address(t).is_global]  # fmt: skip
    assert fooled  # still true of Python's ipaddress; the table refuses them
    assert all(non_public_reason(ipaddress.ip_address(t)) for t in fooled)


@pytest.mark.parametrize(
    ("text", "inner"),
    [("::ffff:127.0.0.1", "127.0.0.1"), ("::ffff:0:7f00:1", "127.0.0.1"),
     ("::7f00:1", "127.0.0.1"), ("64:ff9b::7f00:1", "127.0.0.1"),
     ("2002:7f00:1::", "127.0.0.1"), ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45")],
)  # fmt: skip
def test_every_ipv6_embedding_of_ipv4_is_unwrapped(text: str, inner: str) -> None:
    address = ipaddress.ip_address(text)
    assert isinstance(address, ipaddress.IPv6Address)
    assert str(embedded_ipv4(address)) == inner


LOOPBACK_AS_IPV6 = ["::7f00:1", "::ffff:0:7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::", "fec0::1",
                    "::ffff:7f00:1", "2001::1"]  # fmt: skip


@pytest.mark.parametrize("text", LOOPBACK_AS_IPV6)
def test_a_wildcard_allowed_url_with_an_ipv6_spelling_of_loopback_is_refused(text: str) -> None:
    with pytest.raises(CallbackRefused, match="non-public address"):
        CallbackPolicy(("*",)).check(f"http://[{text}]:8080/hook")


@pytest.mark.parametrize("text", ["::7f00:1", "64:ff9b::7f00:1", "2002:7f00:1::", "fec0::1"])
def test_a_name_that_rebinds_to_an_ipv6_spelling_of_loopback_is_refused_at_connect(
    text: str,
) -> None:
    answers = iter([["93.184.216.34"], [text]])
    policy = CallbackPolicy(("*.rebind.test",), lambda _h, _p: next(answers))
    policy.check("http://a.rebind.test/hook")  # at submit: public
    result = WebhookSender(policy, b"s", timeout=1).post("http://a.rebind.test/hook", b"{}", "d")
    assert (result.ok, result.permanent) == (False, True)
    assert "non-public address" in (result.error or "")
