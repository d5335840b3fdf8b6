"""IPAM on a real SQLite store in tmp_path: pools, validation, addresses, round robin, release."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libnetwork import ipam
from libnetwork.errors import AlreadyExists, InvalidArgument, Overlap, PoolExhausted
from libnetwork.model import Network, PoolConfig
from libnetwork.store import SQLiteStore

ETH0_ROUTES = [("0.0.0.0/0", "default via 10.0.2.2 dev eth0"), ("::/0", "default via fe80::2 dev eth0")]


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(str(tmp_path))
    yield s
    s.close()


def make_network(name: str) -> Network:
    return Network(id=(name.encode().hex() * 64)[:64], name=name, driver="bridge", created="1")


def create(store: SQLiteStore, name: str, *pools: PoolConfig | None, version: int = 4, routes=()) -> Network:
    """A stored network with one pool per argument (None: a default subnet)."""
    n = make_network(name)
    with store.transaction() as tx:
        for requested in pools or (None,):
            n.pools.append(ipam.allocate_pool(tx, n, requested, version, list(routes)))
        tx.put_network(n)
    return n


def allocate(store: SQLiteStore, n: Network, owner: str, version: int = 4, address: str = "") -> str:
    with store.transaction() as tx:
        return ipam.allocate_address(tx, n, version, owner, address)


def release(store: SQLiteStore, owner: str) -> list[str]:
    with store.transaction() as tx:
        return ipam.release_addresses(tx, owner)


def usage(store: SQLiteStore, n: Network) -> list[ipam.PoolUsage]:
    with store.snapshot() as tx:
        return ipam.pool_usage(tx, n.id)


# -- default subnets -----------------------------------------------------------------------------


def test_first_default_subnet_and_gateway(store):
    n = create(store, "a", routes=ETH0_ROUTES)
    assert n.pools == [PoolConfig("172.17.0.0/16", "172.17.0.1")]


def test_default_walk_skips_networks_and_host_routes(store):
    assert create(store, "a").pools[0].subnet == "172.17.0.0/16"
    routes = [("172.18.5.0/24", "route 172.18.5.0/24 dev wlan0")] + ETH0_ROUTES
    assert create(store, "b", routes=routes).pools[0].subnet == "172.19.0.0/16"
    # 172.20.0.0/14 carved into /16s: 172.20 is hit by a route, 172.21 by a network.
    create(store, "c", PoolConfig("172.21.3.0/24"))
    routes = [("172.18.0.0/16", "route 172.18.0.0/16 dev wlan0"), ("172.20.0.0/16", "route 172.20.0.0/16 dev vpn0")]
    assert create(store, "d", routes=routes).pools[0].subnet == "172.22.0.0/16"
    # Routes are not remembered: without them 172.18 is free again.
    assert create(store, "e").pools[0].subnet == "172.18.0.0/16"


def test_default_walk_falls_through_to_192_168_in_slash_20s(store):
    routes = [("172.16.0.0/12", "route 172.16.0.0/12 dev vpn0"), ("192.168.0.0/24", "route 192.168.0.0/24 dev eth0")]
    n = create(store, "home", routes=routes)
    assert n.pools == [PoolConfig("192.168.16.0/20", "192.168.16.1")]


def test_no_default_subnet_left_is_pool_exhausted_naming_the_pools(store):
    routes = [("172.16.0.0/12", "route 172.16.0.0/12 dev vpn0"), ("192.168.0.0/16", "route 192.168.0.0/16 dev eth0")]
    with pytest.raises(PoolExhausted) as err:
        create(store, "x", routes=routes)
    assert str(err.value) == (
        "no free default IPv4 subnet: all of 172.17.0.0/16, 172.18.0.0/16, 172.19.0.0/16, 172.20.0.0/14, "
        "172.24.0.0/14, 172.28.0.0/14, 192.168.0.0/16 overlap existing networks or host routes; pass --subnet"
    )


def test_default_ipv6_subnets_are_slash_64s_of_the_ula(store):
    a = create(store, "a", version=6, routes=ETH0_ROUTES)
    assert a.pools == [PoolConfig("fd4e:6574:6374::/64", "fd4e:6574:6374::1")]
    routes = [("fd4e:6574:6374::/62", "route fd4e:6574:6374::/62 dev tun0")]
    assert create(store, "b", version=6, routes=routes).pools[0].subnet == "fd4e:6574:6374:4::/64"
    assert create(store, "c", version=6).pools[0].subnet == "fd4e:6574:6374:1::/64"


def test_no_default_ipv6_subnet_left(store):
    routes = [("fd4e:6574:6374::/48", "route fd4e:6574:6374::/48 dev tun0")]
    with pytest.raises(PoolExhausted, match=r"^no free default IPv6 subnet: all of fd4e:6574:6374::/48 overlap"):
        create(store, "x", version=6, routes=routes)


def test_bad_host_route_is_reported(store):
    with pytest.raises(InvalidArgument, match="host route 'nonsense' .* is not a CIDR"):
        create(store, "x", routes=[("nonsense", "route nonsense dev eth0")])


def test_released_pool_is_reused(store):
    a = create(store, "a")
    with store.transaction() as tx:
        ipam.release_pools(tx, a.id)
        ipam.release_pools(tx, a.id)  # idempotent
        tx.delete_network(a.id)
    assert create(store, "b").pools[0].subnet == "172.17.0.0/16"


def test_options_without_a_subnet_are_refused(store):
    for requested in (PoolConfig("", gateway="10.0.0.1"), PoolConfig("", ip_range="10.0.0.0/24"),
                      PoolConfig("", aux_addresses={"a": "10.0.0.5"})):
        with pytest.raises(InvalidArgument, match="needs? an explicit subnet; pass --subnet too"):
            create(store, "x", requested)


# -- explicit subnets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subnet, version, message",
    [
        ("10.0.0.5/24", 4, "subnet 10.0.0.5/24 of network 'x' is not a network address (host bits are set); "
                           "did you mean 10.0.0.0/24?"),
        ("fd00::5/64", 6, "did you mean fd00::/64?"),
        ("10.0.0.0", 4, "has no prefix length"),
        ("banana/8", 4, "subnet 'banana/8' of network 'x' is not a valid CIDR"),
        ("10.0.0.0/33", 4, "is not a valid CIDR"),
        ("10.0.0.0/31", 4, "is too small: IPv4 subnets need a prefix of /30 or shorter"),
        ("10.0.0.1/32", 4, "is too small"),
        ("fd00::/127", 6, "is too small: IPv6 subnets need a prefix of /126 or shorter"),
        ("fd00::/64", 4, "subnet fd00::/64 of network 'x' is IPv6 where an IPv4 one was expected"),
        ("10.0.0.0/8", 6, "is IPv4 where an IPv6 one was expected"),
        ("224.1.0.0/16", 4, "is a multicast range"),
        ("127.0.0.0/8", 4, "is a loopback range"),
        ("0.0.0.0/0", 4, "unspecified-address range"),
        ("ff02::/64", 6, "multicast"),
    ],
)
def test_explicit_subnet_validation(store, subnet, version, message):
    with pytest.raises(InvalidArgument) as err:
        create(store, "x", PoolConfig(subnet), version=version)
    assert message in str(err.value)


@pytest.mark.parametrize("subnet, version", [("10.0.0.0/30", 4), ("10.0.0.0/8", 4), ("fd00::/126", 6),
                                             ("2001:db8::/32", 6)])
def test_explicit_subnet_accepted(store, subnet, version):
    n = create(store, "x", PoolConfig(subnet), version=version)
    net = ipaddress.ip_network(subnet)
    assert n.pools == [PoolConfig(subnet, str(net.network_address + 1))]


def test_overlap_with_another_network_names_it(store):
    create(store, "blue", PoolConfig("10.1.2.0/24"))
    with pytest.raises(Overlap) as err:
        create(store, "red", PoolConfig("10.1.0.0/16"))
    assert str(err.value) == (
        "subnet 10.1.0.0/16 overlaps 10.1.2.0/24 of network 'blue'; choose another subnet for network 'red'"
    )
    assert isinstance(err.value, InvalidArgument)


def test_overlap_with_a_host_route_names_it(store):
    routes = [("192.168.1.0/24", "route 192.168.1.0/24 dev eth0")] + ETH0_ROUTES
    with pytest.raises(Overlap, match=r"^subnet 192.168.0.0/16 overlaps host route 192.168.1.0/24 dev eth0;"):
        create(store, "x", PoolConfig("192.168.0.0/16"), routes=routes)
    with pytest.raises(Overlap, match=r"^subnet 10.9.0.0/16 overlaps host route 10.9.0.0/16 via 10.0.2.2 dev eth0;"):
        route = ("10.9.0.0/16", "host route 10.9.0.0/16 via 10.0.2.2 dev eth0")
        create(store, "x", PoolConfig("10.9.0.0/16"), routes=[route])
    with pytest.raises(Overlap, match=r"^subnet 10.8.0.0/16 overlaps host route 10.8.0.0/24;"):
        create(store, "x", PoolConfig("10.8.0.0/16"), routes=[("10.8.0.0/24", "")])
    # The default route is never a clash; an IPv6 route never clashes with IPv4.
    create(store, "y", PoolConfig("10.0.0.0/8"), routes=ETH0_ROUTES + [("fd00::/8", "route fd00::/8 dev eth0")])


def test_two_subnets_of_one_network_must_not_overlap(store):
    with pytest.raises(Overlap, match="overlaps 10.1.0.0/16 of network 'x'"):
        create(store, "x", PoolConfig("10.1.0.0/16"), PoolConfig("10.1.128.0/17"))


# -- gateway, ip range, aux ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "requested, message",
    [
        (PoolConfig("10.1.0.0/24", gateway="10.2.0.1"),
         "gateway 10.2.0.1 of network 'x' is outside its subnet 10.1.0.0/24; pick an address inside it"),
        (PoolConfig("10.1.0.0/24", gateway="10.1.0.0"),
         "gateway 10.1.0.0 of network 'x' is the network address of subnet 10.1.0.0/24; "
         "pick a host address such as 10.1.0.1"),
        (PoolConfig("10.1.0.0/24", gateway="10.1.0.255"), "is the broadcast address of subnet 10.1.0.0/24"),
        (PoolConfig("10.1.0.0/24", gateway="10.1.0.1/24"), "gateway '10.1.0.1/24' of network 'x' is not an IP address"),
        (PoolConfig("10.1.0.0/24", gateway="fd00::1"), "is outside its subnet"),
        (PoolConfig("10.1.0.0/24", ip_range="10.2.0.0/25"),
         "ip range 10.2.0.0/25 of network 'x' is outside its subnet 10.1.0.0/24"),
        (PoolConfig("10.1.0.0/24", ip_range="10.1.0.0/16"), "is outside its subnet"),
        (PoolConfig("10.1.0.0/24", ip_range="10.1.0.7/29"), "did you mean 10.1.0.0/29?"),
        (PoolConfig("10.1.0.0/24", ip_range="10.1.0.255/32"), "holds no host address of subnet 10.1.0.0/24"),
        (PoolConfig("10.1.0.0/24", aux_addresses={"printer": "10.9.0.1"}),
         "auxiliary address 'printer' 10.9.0.1 of network 'x' is outside its subnet 10.1.0.0/24"),
        (PoolConfig("10.1.0.0/24", aux_addresses={"printer": "10.1.0.1"}),
         "auxiliary address 'printer'=10.1.0.1 of network 'x' is already the gateway"),
        (PoolConfig("10.1.0.0/24", aux_addresses={"a": "10.1.0.5", "b": "10.1.0.5"}),
         "auxiliary address 'b'=10.1.0.5 of network 'x' is already auxiliary address 'a'"),
        (PoolConfig("10.1.0.0/24", aux_addresses={"a": "10.1.0.0"}), "is the network address"),
        (PoolConfig("10.1.0.0/24", aux_addresses={"": "10.1.0.9"}), "has no name"),
    ],
)
def test_gateway_range_and_aux_validation(store, requested, message):
    with pytest.raises(InvalidArgument) as err:
        create(store, "x", requested)
    assert message in str(err.value)
    with store.snapshot() as tx:
        assert ipam.allocations(tx) == []


def test_explicit_gateway_range_and_aux_are_honoured(store):
    n = create(store, "x", PoolConfig("10.1.0.0/24", gateway="10.1.0.254", ip_range="10.1.0.0/29",
                                      aux_addresses={"printer": "10.1.0.2"}))
    assert n.pools == [PoolConfig("10.1.0.0/24", "10.1.0.254", "10.1.0.0/29", {"printer": "10.1.0.2"})]
    # The range 10.1.0.0/29 offers .1-.7; .2 is the printer's.
    got = [allocate(store, n, f"ep{i}") for i in range(6)]
    assert got == ["10.1.0.1/24", "10.1.0.3/24", "10.1.0.4/24", "10.1.0.5/24", "10.1.0.6/24", "10.1.0.7/24"]
    with pytest.raises(PoolExhausted, match=r"6 of 6 addresses in use"):
        allocate(store, n, "ep-last")
    # Outside the range but inside the subnet is still fine for a static address.
    assert allocate(store, n, "static", address="10.1.0.100") == "10.1.0.100/24"
    with store.snapshot() as tx:
        owners = {owner: address for _, address, owner in ipam.allocations(tx, n.id)}
    assert owners[ipam.gateway_owner(n.id)] == "10.1.0.254/24"
    assert owners[ipam.aux_owner("printer", n.id)] == "10.1.0.2/24"


# -- dynamic addresses ---------------------------------------------------------------------------


def test_slash_24_gives_exactly_253_addresses(store):
    n = create(store, "x", PoolConfig("10.1.0.0/24"))
    with store.transaction() as tx:
        got = [ipam.allocate_address(tx, n, 4, f"ep{i:03}") for i in range(253)]
    assert len(set(got)) == 253
    assert got[0] == "10.1.0.2/24" and got[-1] == "10.1.0.254/24"
    assert "10.1.0.1/24" not in got and "10.1.0.255/24" not in got and "10.1.0.0/24" not in got
    with pytest.raises(PoolExhausted) as err:
        allocate(store, n, "one-too-many")
    assert str(err.value) == (
        "address pool of network 'x' (10.1.0.0/24) is exhausted: 253 of 253 addresses in use; "
        "remove endpoints or use a larger subnet"
    )
    assert usage(store, n) == [ipam.PoolUsage(n.id, "10.1.0.0/24", 253, 253, 253)]


def test_slash_30_holds_a_gateway_and_one_endpoint(store):
    n = create(store, "x", PoolConfig("10.1.0.0/30"))
    assert n.pools[0].gateway == "10.1.0.1"
    assert allocate(store, n, "a") == "10.1.0.2/30"
    with pytest.raises(PoolExhausted, match=r"\(10.1.0.0/30\) is exhausted: 1 of 1 addresses in use"):
        allocate(store, n, "b")


def test_ipv6_addresses(store):
    n = create(store, "x", PoolConfig("fd00:1::/64"), version=6)
    assert allocate(store, n, "a", version=6) == "fd00:1::2/64"
    assert allocate(store, n, "b", version=6) == "fd00:1::3/64"
    assert usage(store, n)[0].capacity == 2**64 - 2  # everything but ::0 and the gateway
    small = create(store, "y", PoolConfig("fd00:2::/126"), version=6)
    # No broadcast in IPv6: ::2 and ::3 are both usable.
    assert [allocate(store, small, o, version=6) for o in "ab"] == ["fd00:2::2/126", "fd00:2::3/126"]
    with pytest.raises(PoolExhausted, match="2 of 2"):
        allocate(store, small, "c", version=6)


def test_dual_stack_endpoint(store):
    n = make_network("dual")
    with store.transaction() as tx:
        n.pools.append(ipam.allocate_pool(tx, n, None, 4, []))
        n.pools.append(ipam.allocate_pool(tx, n, None, 6, []))
        tx.put_network(n)
        assert ipam.allocate_address(tx, n, 4, "ep") == "172.17.0.2/16"
        assert ipam.allocate_address(tx, n, 6, "ep") == "fd4e:6574:6374::2/64"
    with store.snapshot() as tx:
        assert ipam.addresses_of(tx, "ep") == ["172.17.0.2/16", "fd4e:6574:6374::2/64"]
    assert release(store, "ep") == ["172.17.0.2/16", "fd4e:6574:6374::2/64"]


def test_family_without_a_subnet_is_refused(store):
    n = create(store, "v4only", PoolConfig("10.1.0.0/24"))
    with pytest.raises(InvalidArgument, match="network 'v4only' has no IPv6 subnet; create it with --ipv6"):
        allocate(store, n, "a", version=6)
    with pytest.raises(InvalidArgument, match="IP version must be 4 or 6"):
        allocate(store, n, "a", version=5)


def test_one_address_per_owner_and_family(store):
    n = create(store, "x", PoolConfig("10.1.0.0/24"))
    allocate(store, n, "ep")
    with pytest.raises(AlreadyExists, match="endpoint ep already holds address 10.1.0.2/24 in network 'x'"):
        allocate(store, n, "ep")


def test_several_subnets_of_one_family_are_tried_in_order(store):
    n = create(store, "x", PoolConfig("10.1.0.0/30"), PoolConfig("10.2.0.0/30"))
    assert [allocate(store, n, o) for o in "ab"] == ["10.1.0.2/30", "10.2.0.2/30"]
    with pytest.raises(PoolExhausted) as err:
        allocate(store, n, "c")
    assert "(10.1.0.0/30, 10.2.0.0/30) is exhausted: 2 of 2 addresses in use" in str(err.value)


# -- static addresses ----------------------------------------------------------------------------


def test_static_address_free_taken_and_outside(store):
    n = create(store, "x", PoolConfig("10.1.0.0/16", aux_addresses={"printer": "10.1.0.9"}))
    assert allocate(store, n, "a" * 64, address="10.1.0.5") == "10.1.0.5/16"
    assert allocate(store, n, "b", address="10.1.0.6/16") == "10.1.0.6/16"  # prefix form accepted
    with pytest.raises(AlreadyExists) as err:
        allocate(store, n, "c", address="10.1.0.5")
    assert str(err.value) == (
        "address 10.1.0.5 of network 'x' is already in use by endpoint aaaaaaaaaaaa; "
        "pick another address or remove that endpoint"
    )
    with pytest.raises(AlreadyExists, match="in use by the gateway"):
        allocate(store, n, "c", address="10.1.0.1")
    with pytest.raises(AlreadyExists, match="in use by auxiliary address 'printer'"):
        allocate(store, n, "c", address="10.1.0.9")
    with pytest.raises(InvalidArgument) as err:
        allocate(store, n, "c", address="10.9.0.5")
    assert str(err.value) == "address 10.9.0.5 is outside the subnets of network 'x' (10.1.0.0/16)"
    with pytest.raises(InvalidArgument, match="is the network address of subnet 10.1.0.0/16"):
        allocate(store, n, "c", address="10.1.0.0")
    with pytest.raises(InvalidArgument, match="is the broadcast address"):
        allocate(store, n, "c", address="10.1.255.255")
    with pytest.raises(InvalidArgument, match="is IPv6 where an IPv4 address"):
        allocate(store, n, "c", address="fd00::5")
    with pytest.raises(InvalidArgument, match="is not an IP address"):
        allocate(store, n, "c", address="10.1.0.300")
    # Dynamic allocation steps over the static ones.
    assert allocate(store, n, "d") == "10.1.0.2/16"
    assert usage(store, n)[0].allocated == 3


# -- release and round robin ---------------------------------------------------------------------


def test_released_address_is_not_reused_at_once(store):
    n = create(store, "x", PoolConfig("10.1.0.0/29"))  # .2-.6 for endpoints
    assert [allocate(store, n, o) for o in "abc"] == ["10.1.0.2/29", "10.1.0.3/29", "10.1.0.4/29"]
    assert release(store, "a") == ["10.1.0.2/29"]
    assert release(store, "a") == []  # idempotent
    assert allocate(store, n, "d") == "10.1.0.5/29"
    assert allocate(store, n, "e") == "10.1.0.6/29"
    # The cursor wraps: past .6 the lowest free address is the one released first.
    assert allocate(store, n, "f") == "10.1.0.2/29"
    with pytest.raises(PoolExhausted):
        allocate(store, n, "g")


def test_cursor_survives_reopen(tmp_path):
    with SQLiteStore(str(tmp_path)) as s:
        n = create(s, "x", PoolConfig("10.1.0.0/24"))
        allocate(s, n, "a")
        release(s, "a")
    with SQLiteStore(str(tmp_path)) as s:
        assert allocate(s, n, "b") == "10.1.0.3/24"
        with s.snapshot() as tx:
            assert ipam.allocations(tx, n.id) == [
                (n.id, "10.1.0.1/24", ipam.gateway_owner(n.id)),
                (n.id, "10.1.0.3/24", "b"),
            ]


def test_release_pools_frees_every_address(store):
    n = create(store, "x", PoolConfig("10.1.0.0/24"))
    other = create(store, "y", PoolConfig("10.2.0.0/24"))
    allocate(store, n, "a")
    allocate(store, other, "b")
    with store.transaction() as tx:
        ipam.release_pools(tx, n.id)
    with store.snapshot() as tx:
        assert ipam.addresses_of(tx, "a") == []
        assert [owner for _, _, owner in ipam.allocations(tx)] == [ipam.gateway_owner(other.id), "b"]
        assert ipam.pool_usage(tx, n.id) == []


# -- property: counters and rows agree under any sequence of operations ---------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["dyn", "static", "release"]), st.integers(0, 15)), max_size=40))
def test_counters_match_rows_under_random_operations(tmp_path_factory, ops):
    with SQLiteStore(str(tmp_path_factory.mktemp("prop"))) as s:
        n = create(s, "p", PoolConfig("10.1.0.0/28", ip_range="10.1.0.0/29", aux_addresses={"a": "10.1.0.4"}))
        held: dict[str, str] = {}
        for op, k in ops:
            owner = f"o{k}"
            try:
                if op == "release":
                    freed = release(s, owner)
                    assert freed == ([held.pop(owner)] if owner in held else [])
                elif op == "dyn":
                    held[owner] = allocate(s, n, owner)
                else:
                    held[owner] = allocate(s, n, owner, address=f"10.1.0.{k}")
            except (PoolExhausted, AlreadyExists, InvalidArgument):
                pass
        assert len(set(held.values())) == len(held)
        (u,) = usage(s, n)
        assert u.allocated == len(held)
        in_range = [a for a in held.values() if 1 <= int(a.split("/")[0].rsplit(".", 1)[1]) <= 7]
        assert u.in_use == len(in_range) and u.capacity == 5  # .1-.7 minus gateway .1 and aux .4


# -- set_dynamic_range: a CNI range's rangeStart/rangeEnd ----------------------------------------


def narrowed(store: SQLiteStore, name: str, requested: PoolConfig, first: str, last: str) -> Network:
    n = make_network(name)
    with store.transaction() as tx:
        n.pools.append(ipam.allocate_pool(tx, n, requested, 4, []))
        ipam.set_dynamic_range(tx, n, requested.subnet, first, last)
        tx.put_network(n)
    return n


def test_a_narrowed_range_hands_out_only_its_addresses_and_counts_exactly(store):
    # The gateway .1 and the aux .5 are inside [.4, .6]; .4 and .6 are what is left to hand out.
    n = narrowed(store, "x", PoolConfig("10.1.0.0/24", gateway="10.1.0.5", aux_addresses={"p": "10.1.0.100"}),
                 "10.1.0.4", "10.1.0.6")
    assert usage(store, n) == [ipam.PoolUsage(n.id, "10.1.0.0/24", 0, 0, 2)]
    assert [allocate(store, n, f"ep{i}") for i in range(2)] == ["10.1.0.4/24", "10.1.0.6/24"]
    with pytest.raises(PoolExhausted, match=r"2 of 2 addresses in use"):
        allocate(store, n, "ep-last")
    assert allocate(store, n, "static", address="10.1.0.9") == "10.1.0.9/24"  # outside the range: still fine
    assert usage(store, n) == [ipam.PoolUsage(n.id, "10.1.0.0/24", 3, 2, 2)]


@pytest.mark.parametrize(
    "first, last, message",
    [
        ("10.1.0.x", "10.1.0.9", "range start '10.1.0.x' of subnet 10.1.0.0/24 is not an IP address"),
        ("10.1.0.4", "10.2.0.9", "range end 10.2.0.9 is outside its subnet 10.1.0.0/24; pick an address inside it"),
        ("10.1.0.0", "10.1.0.9", "range start 10.1.0.0 is not a host address of subnet 10.1.0.0/24"),
        ("10.1.0.4", "10.1.0.255", "range end 10.1.0.255 is not a host address of subnet 10.1.0.0/24"),
        ("10.1.0.9", "10.1.0.4", "range start 10.1.0.9 of subnet 10.1.0.0/24 is after its end 10.1.0.4; swap them"),
    ],
)
def test_a_bad_range_is_refused_and_nothing_is_written(store, first, last, message):
    with pytest.raises(InvalidArgument) as err:
        narrowed(store, "x", PoolConfig("10.1.0.0/24"), first, last)
    assert str(err.value) == message
    with store.snapshot() as tx:
        assert tx.get_network("x") is None and ipam.allocations(tx) == []


def test_a_range_of_a_subnet_the_network_lacks_is_refused(store):
    n = create(store, "x", PoolConfig("10.1.0.0/24"))
    message = r"range 10.2.0.4-10.2.0.9 is of subnet 10.2.0.0/24, which network 'x'"
    with pytest.raises(InvalidArgument, match=message), store.transaction() as tx:
        ipam.set_dynamic_range(tx, n, "10.2.0.0/24", "10.2.0.4", "10.2.0.9")


# -- the rules both stores share (no store needed) ------------------------------------------------


def test_plan_pool_takes_a_default_from_the_picker_it_is_given():
    n = make_network("g")
    taken = [ipam.Clash.of_network(ipaddress.ip_network("10.0.0.0/24"), "other")]

    def pick(version, clashes):
        return ipam.first_free_subnet([("10.0.0.0/8", 24)], clashes)

    assert ipam.plan_pool(n, None, 4, taken, pick) == PoolConfig("10.0.1.0/24", "10.0.1.1")
    with pytest.raises(Overlap, match=r"subnet 10.0.0.0/16 overlaps 10.0.0.0/24 of network 'other'"):
        ipam.plan_pool(n, PoolConfig("10.0.0.0/16"), 4, taken, pick)
    with pytest.raises(InvalidArgument, match=r"IP version must be 4 or 6, not 5"):
        ipam.plan_pool(n, None, 5, [], pick)


def test_first_free_subnet_walks_the_default_pools_in_order():
    clashes = ipam.route_clashes([("10.0.0.0/9", "route 10.0.0.0/9 dev eth0"), ("::/0", "default")], 4)
    assert clashes == [ipam.Clash(0x0A000000, 0x0A7FFFFF, "host route 10.0.0.0/9 dev eth0")]
    assert str(ipam.first_free_subnet([("10.0.0.0/8", 24)], clashes)) == "10.128.0.0/24"
    assert ipam.first_free_subnet([("10.0.0.0/9", 24)], clashes) is None


def test_owners_are_named_in_a_users_words():
    assert ipam.describe_owner(ipam.gateway_owner("n" * 64)) == "the gateway"
    assert ipam.describe_owner(ipam.aux_owner("printer", "n" * 64)) == "auxiliary address 'printer'"
    assert ipam.describe_owner("e" * 64) == "endpoint eeeeeeeeeeee"
    assert [ipam.is_reserved_owner(o) for o in (ipam.gateway_owner("n"), ipam.aux_owner("a", "n"), "e")] == [
        True, True, False]


def test_pool_range_and_a_static_address_request():
    n = make_network("s")
    pools = [ipam.PoolRange.of(PoolConfig("10.1.0.0/24", ip_range="10.1.0.128/25")),
             ipam.PoolRange.of(PoolConfig("10.2.0.0/24"))]
    assert (pools[0].first, pools[0].last) == (0x0A010080, 0x0A0100FE)
    assert pools[0].in_range(0x0A010080) and not pools[0].in_range(0x0A01007F) and pools[0].contains(0x0A01007F)
    assert pools[1].format(0x0A020007) == "10.2.0.7/24"
    assert ipam.static_pool(n, ipam.parse_static_address(n, 4, "10.2.0.7/16"), pools) is pools[1]
    with pytest.raises(InvalidArgument, match=r"address 10.3.0.1 is outside the subnets of network 's' "
                                              r"\(10.1.0.0/24, 10.2.0.0/24\)"):
        ipam.static_pool(n, ipam.parse_static_address(n, 4, "10.3.0.1"), pools)
    with pytest.raises(InvalidArgument, match=r"is the broadcast address of subnet 10.2.0.0/24"):
        ipam.static_pool(n, ipam.parse_static_address(n, 4, "10.2.0.255"), pools)
    with pytest.raises(InvalidArgument, match=r"address fd00::1 is IPv6 where an IPv4 address"):
        ipam.parse_static_address(n, 4, "fd00::1")
