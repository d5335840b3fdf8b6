"""The IPAM's address arithmetic (libnetwork/ipam/rules.py, on the standard library's ipaddress)
checked against an independent implementation: netaddr's IPSet and subnet iteration, brute force.
Two libraries agreeing on random subnets, ranges and clashes is a stronger test than examples."""

from __future__ import annotations

import ipaddress

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from libnetwork.ipam import rules

BASES = ["10.0.0.0/16", "172.20.0.0/20", "192.168.0.0/22", "fd00:1::/112"]


@st.composite
def subnet_and_range(draw):
    base = ipaddress.ip_network(draw(st.sampled_from(BASES)))
    prefixlen = draw(st.integers(base.prefixlen, base.max_prefixlen - 2))
    subnet = ipaddress.ip_network((int(base.network_address), prefixlen))
    range_len = draw(st.integers(prefixlen, base.max_prefixlen))
    offset = draw(st.integers(0, (1 << (range_len - prefixlen)) - 1)) << (base.max_prefixlen - range_len)
    ip_range = ipaddress.ip_network((int(subnet.network_address) + offset, range_len))
    return subnet, draw(st.sampled_from([None, ip_range]))


@settings(max_examples=300, deadline=None)
@given(subnet_and_range())
def test_dynamic_range_is_the_subnets_host_addresses_within_the_range(case):
    subnet, ip_range = case
    first, last = rules.dynamic_range(subnet, ip_range)
    hosts = netaddr.IPSet([str(subnet)])
    hosts.remove(netaddr.IPAddress(str(subnet.network_address)))  # the subnet's own address
    if subnet.version == 4:
        hosts.remove(netaddr.IPAddress(str(subnet.broadcast_address)))
    if ip_range is not None:
        hosts &= netaddr.IPSet([str(ip_range)])
    expected = sorted(int(ip) for ip in hosts)
    assert (list(range(first, last + 1)) if first <= last else []) == expected


@st.composite
def base_prefix_and_clashes(draw):
    base = ipaddress.ip_network(draw(st.sampled_from(["10.0.0.0/20", "fd00:7::/116"])))
    prefixlen = draw(st.integers(base.prefixlen, base.prefixlen + 6))
    clashes = []
    for _ in range(draw(st.integers(0, 6))):
        length = draw(st.integers(base.prefixlen, base.max_prefixlen))
        start = draw(st.integers(int(base.network_address), int(base.broadcast_address)))
        clash = ipaddress.ip_network((start, length), strict=False)
        clashes.append(rules.Clash(int(clash.network_address), int(clash.broadcast_address), str(clash)))
    return base, prefixlen, clashes


@settings(max_examples=300, deadline=None)
@given(base_prefix_and_clashes())
def test_first_free_block_is_the_first_subnet_netaddr_finds_clear_of_every_clash(case):
    base, prefixlen, clashes = case
    taken = netaddr.IPSet([netaddr.IPRange(c.first, c.last) for c in clashes]) if clashes else netaddr.IPSet()
    expected = next((block for block in netaddr.IPNetwork(str(base)).subnet(prefixlen)
                     if not (netaddr.IPSet([block]) & taken)), None)
    found = rules.first_free_block(base, prefixlen, clashes)
    assert (str(found) if found else None) == (str(expected) if expected else None)
