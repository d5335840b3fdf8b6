"""The multi-host lab itself: etcd inside the switch, reachable from every host over the underlay,
hosts registered, etcd stopped/killed/restarted by its PID."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.kernel


def test_etcd_runs_inside_the_switch_and_every_host_reaches_it_and_is_registered(overlay_lab):
    lab = overlay_lab(2)
    assert lab.etcd_url == "etcd://198.18.0.254:2379"
    keys = lab.etcd_dump()
    for host in lab.hosts:
        record = json.loads(keys[f"/netctl/v1/hosts/{host.name}"])
        assert record["vtep"] == lab.vteps[host.name]
        written = json.loads(open(host.path(f"{host.root}/global.json")).read())
        assert written == {"store": lab.etcd_url, "host": host.name, "vtep": lab.vteps[host.name]}
    # Nothing listens on the machine's side: the switch's namespace holds etcd's sockets.
    listening = lab.switch.run("ss", "-Htln").stdout
    assert "198.18.0.254:2379" in listening


def test_etcd_stops_and_comes_back_with_its_data(overlay_lab):
    lab = overlay_lab(1, register=False)
    lab.etcd.ctl("put", "/netctl/probe", "1")
    pid = lab.etcd.pid
    lab.etcd.stop()
    assert lab.etcd.ctl("get", "/netctl/probe", "--dial-timeout=1s", "--command-timeout=1s", check=False) == ""
    lab.etcd.start()
    assert lab.etcd.pid != pid
    assert lab.etcd_dump() == {"/netctl/probe": "1"}
    lab.etcd.kill()
    lab.etcd.start()
    assert lab.etcd_dump() == {"/netctl/probe": "1"}
