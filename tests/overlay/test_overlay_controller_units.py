"""Pure logic of the controller's global-store wiring: where the store and the host name come from,
and the names a stand-in network derives from an id (they must be the overlay driver's own)."""

from __future__ import annotations

import json

import pytest

from drivers.overlay import OverlayDriver
from libnetwork.controller import Controller, is_global_copy, overlay_stand_in
from libnetwork.errors import InvalidArgument, StoreError
from libnetwork.model import Endpoint, Network


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("NETCTL_STORE", "NETCTL_HOST_NAME", "NETCTL_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_any_store_setting_there_is_no_global_store(tmp_path, clean_env):
    c = Controller(str(tmp_path))
    assert c.store_url == "" and c.global_store is None
    assert c.overlay_networks_here() == [] and c.reconcile_overlay() == {}
    with pytest.raises(InvalidArgument, match="needs a global store; pass --store"):
        c._require_global_store("overlay network 'x'")


def test_arguments_beat_the_environment_which_beats_global_json(tmp_path, clean_env):
    (tmp_path / "global.json").write_text(json.dumps({"store": "etcd://198.18.0.254:2379", "host": "from-file",
                                                      "vtep": "198.18.0.7"}))
    assert Controller(str(tmp_path)).store_url == "etcd://198.18.0.254:2379"
    assert Controller(str(tmp_path)).host_name == "from-file"
    assert Controller(str(tmp_path)).vtep() == "198.18.0.7"
    clean_env.setenv("NETCTL_STORE", "etcd://198.18.1.1:2379")
    clean_env.setenv("NETCTL_HOST_NAME", "from-env")
    assert Controller(str(tmp_path)).store_url == "etcd://198.18.1.1:2379"
    assert Controller(str(tmp_path)).host_name == "from-env"
    c = Controller(str(tmp_path), store_url="etcd://198.18.2.2:2379", host_name="from-arg")
    assert (c.store_url, c.host_name) == ("etcd://198.18.2.2:2379", "from-arg")


def test_an_unreadable_global_json_is_one_clear_error(tmp_path, clean_env):
    (tmp_path / "global.json").write_text("{not json")
    with pytest.raises(StoreError, match="global.json is unreadable .*restart `netctl daemon --store URL`"):
        Controller(str(tmp_path)).store_url


def test_a_stand_in_network_carries_the_device_names_the_driver_plans(tmp_path):
    network = Network(id="ab" * 32, name="o", driver="overlay", scope="global", mtu=1450,
                      driver_state={"vni": "300"})
    OverlayDriver("198.18.0.1", str(tmp_path)).plan_network(network, [], None)
    stand_in = overlay_stand_in(network.id)
    assert {k: stand_in.driver_state[k] for k in ("bridge", "vxlan")} == {
        k: network.driver_state[k] for k in ("bridge", "vxlan")}


def test_local_copies_of_global_endpoints_are_told_by_their_veth_name():
    from drivers.bridge import host_veth_name as bridge_veth
    from drivers.overlay import host_veth_name as overlay_veth

    assert is_global_copy(Endpoint(id="e", name="x", network_id="n", host_ifname=overlay_veth("c" * 64)))
    assert not is_global_copy(Endpoint(id="e", name="x", network_id="n", host_ifname=bridge_veth("c" * 64)))
    assert not is_global_copy(Endpoint(id="e", name="x", network_id="n"))  # null driver: no veth
