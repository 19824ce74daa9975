"""Which addresses a callback may reach: an explicit table of every non-public range.

`ipaddress.is_global` alone does not decide: it calls IPv4-compatible, IPv4-translated,
NAT64 and 6to4 spellings of loopback global. Here every special-purpose range of the IANA
registries is named, IPv6 spellings that carry an IPv4 address are unwrapped and judged as
that IPv4 address, and an IPv6 address outside global unicast (2000::/3) is refused.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# Most specific first: the first range that holds an address names it.
def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), name) for net, name in rows)


NON_PUBLIC_V4 = _table(
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

NON_PUBLIC_V6 = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID (deprecated)"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("2002::/16", "6to4"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

# Spellings that reach the IPv4 address they carry: judged as that address.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
COMPATIBLE = ipaddress.IPv6Network("::/96")
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 spelling carries, if it carries one (any of five ways)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64 or address in TRANSLATED or address in COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    return None


def _lookup(address: IPAddress) -> str | None:
    table = NON_PUBLIC_V4 if isinstance(address, ipaddress.IPv4Address) else NON_PUBLIC_V6
    for network, name in table:
        if address in network:
            return name
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why this address is not public (a range's name), or None when it is."""
    if isinstance(address, ipaddress.IPv4Address):
        return _lookup(address)
    inner = embedded_ipv4(address)
    inner_reason = _lookup(inner) if inner is not None else None
    if address in IPV4_MAPPED or address in NAT64:
        # These reach the IPv4 address itself: public exactly when it is.
        return f"{inner_reason} ({inner}) spelled as IPv6" if inner_reason else None
    reason = _lookup(address)
    if reason is not None:
        return f"{reason}, carrying {inner_reason} {inner}" if inner_reason else reason
    if address not in GLOBAL_UNICAST:
        return "reserved (outside 2000::/3)"
    return None


def is_public(address: IPAddress) -> bool:
    return non_public_reason(address) is None
