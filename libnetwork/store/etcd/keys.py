"""The key schema of the global store: every key netctl writes in etcd is built here (ETCD_SCHEMA.md
beside this package says the same in prose; keep both in step)."""

from __future__ import annotations

from libnetwork.errors import InvalidArgument

SCHEMA_VERSION = 1
SCHEMA_KEY = "/netctl/schema"  # the only key outside the versioned prefix: which prefix is current
PREFIX = f"/netctl/v{SCHEMA_VERSION}/"


def _component(value: str, what: str) -> str:
    if not value or "/" in value:
        raise InvalidArgument(f"{what} {value!r} cannot be stored in etcd: it must be non-empty and contain no '/'")
    return value


class Keys:
    """Every key netctl writes, in one place."""

    NETWORKS = PREFIX + "networks/"
    NETWORK_NAMES = PREFIX + "names/networks/"
    ENDPOINTS = PREFIX + "endpoints/"
    ENDPOINT_NAMES = PREFIX + "names/endpoints/"
    VNIS = PREFIX + "vnis/"
    SUBNETS = PREFIX + "ipam/subnets/"
    ADDRESSES = PREFIX + "ipam/addresses/"
    CURSORS = PREFIX + "ipam/cursors/"
    HOSTS = PREFIX + "hosts/"
    PEERS = PREFIX + "peers/"

    @staticmethod
    def network(network_id: str) -> str:
        return Keys.NETWORKS + _component(network_id, "network id")

    @staticmethod
    def network_name(name: str) -> str:
        return Keys.NETWORK_NAMES + _component(name, "network name")

    @staticmethod
    def endpoints_of(network_id: str) -> str:
        return Keys.ENDPOINTS + _component(network_id, "network id") + "/"

    @staticmethod
    def endpoint(network_id: str, endpoint_id: str) -> str:
        return Keys.endpoints_of(network_id) + _component(endpoint_id, "endpoint id")

    @staticmethod
    def endpoint_name(network_id: str, name: str) -> str:
        return Keys.ENDPOINT_NAMES + _component(network_id, "network id") + "/" + _component(name, "endpoint name")

    @staticmethod
    def vni(vni: int) -> str:
        return f"{Keys.VNIS}{vni:08d}"  # zero-padded: keys sort like the numbers

    @staticmethod
    def subnets(version: int) -> str:
        return f"{Keys.SUBNETS}v{version}/"

    @staticmethod
    def subnet(version: int, first: int, prefixlen: int) -> str:
        return f"{Keys.subnets(version)}{first:032x}-{prefixlen:03d}"

    @staticmethod
    def addresses_of(network_id: str) -> str:
        return Keys.ADDRESSES + _component(network_id, "network id") + "/"

    @staticmethod
    def addresses_in(network_id: str, version: int) -> str:
        return f"{Keys.addresses_of(network_id)}v{version}/"

    @staticmethod
    def address(network_id: str, version: int, n: int) -> str:
        return f"{Keys.addresses_in(network_id, version)}{n:032x}"  # 128-bit hex: keys sort like the numbers

    @staticmethod
    def cursors_of(network_id: str) -> str:
        return Keys.CURSORS + _component(network_id, "network id") + "/"

    @staticmethod
    def cursor(network_id: str, version: int) -> str:
        return f"{Keys.cursors_of(network_id)}v{version}"

    @staticmethod
    def host(name: str) -> str:
        return Keys.HOSTS + _component(name, "host name")

    @staticmethod
    def peers_of(network_id: str) -> str:
        return Keys.PEERS + _component(network_id, "network id") + "/"

    @staticmethod
    def peer(network_id: str, endpoint_id: str) -> str:
        return Keys.peers_of(network_id) + _component(endpoint_id, "endpoint id")


def prefix_end(prefix: str) -> str:
    """The range_end that makes [prefix, end) exactly the keys starting with prefix (keys are ASCII)."""
    if not prefix or not prefix.isascii() or prefix[-1] == "\x7f":
        raise ValueError(f"netctl bug: {prefix!r} is not a prefix netctl uses")
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)

