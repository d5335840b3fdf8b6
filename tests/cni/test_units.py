"""Pure logic of the CNI layer: version negotiation, result shapes, CNI_ARGS, the launcher's parsing.
No kernel, no host: plain functions on plain data."""

from __future__ import annotations

import json

import pytest

from cni_plugins import launch, skel

FULL = {"interfaces": [{"name": "br", "mac": "02:00:00:00:00:01"}, {"name": "eth0", "mac": "02:00:00:00:00:02",
                                                                    "mtu": 1400, "sandbox": "/run/netns/x"}],
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1},
                {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.1.0.53"]}}


@pytest.mark.parametrize("stdin, version", [
    (b'{"cniVersion":"0.4.0"}', b"0.4.0"), (b'{ "cniVersion" :  "0.2.0" , "x": 1}', b"0.2.0"),
    (b'{"cniVersion":"9.9.9"}', b"1.1.0"), (b"", b"1.1.0"), (b"garbage", b"1.1.0"), (b'{"cniVersion":""}', b"1.1.0"),
    (b'{"cniVersion":"0.1.0\\",\\"0.2.0"}', b"1.1.0"), (b'{"cniVersion": 4}', b"1.1.0"),
])
def test_version_reply_echoes_a_supported_version(stdin, version):
    reply = json.loads(launch.version_reply(stdin))
    assert reply == {"cniVersion": version.decode(), "supportedVersions": list(skel.SPEC_VERSIONS)}


def test_state_root(monkeypatch):
    monkeypatch.setattr(launch.posix, "environ", {b"NETCTL_ROOT": b"/run/a"})
    assert launch.state_root(b'{"name": "x"}') == "/run/a"
    assert launch.state_root(b'{"name": "x", "netctlRoot": "/run/b"}') == "/run/b"
    assert launch.state_root(b'{"netctlRoot": "relative"}') == "/run/a"
    assert launch.state_root(b'{"netctlRoot": ') == "/run/a"  # not JSON: the in-process run says so
    monkeypatch.setattr(launch.posix, "environ", {})
    assert launch.state_root(b"{}") == launch.DEFAULT_ROOT == skel.DEFAULT_ROOT


def test_launcher_errors_are_json():
    reply = json.loads(launch._error(11, 'the "service" at C:\\x said\nno'))
    assert reply["code"] == 11 and "service" in reply["msg"]


def test_results_in_every_version():
    assert skel.render_result(FULL, "1.1.0") == dict(FULL, cniVersion="1.1.0")
    v100 = skel.render_result(FULL, "1.0.0")
    assert "mtu" not in v100["interfaces"][1] and v100["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.1.0.1"}
    assert [ip["version"] for ip in skel.render_result(FULL, "0.4.0")["ips"]] == ["4", "6"]
    assert "version" not in v100["ips"][0]
    legacy = skel.render_result(FULL, "0.2.0")
    assert legacy == {"cniVersion": "0.2.0",
                      "ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
                      "ip6": {"ip": "fd00::2/64", "gateway": "fd00::1", "routes": [{"dst": "::/0"}]},
                      "dns": {"nameservers": ["10.1.0.53"]}}
    two = dict(FULL, ips=FULL["ips"] + [{"address": "10.1.0.3/24"}])
    with pytest.raises(skel.CNIError) as err:
        skel.render_result(two, "0.2.0")
    assert err.value.code == 1


@pytest.mark.parametrize("version", skel.SPEC_VERSIONS)
def test_a_rendered_result_parses_back(version):
    rendered = skel.render_result(FULL, version)
    parsed = skel.parse_result(rendered, version)
    assert [ip["address"] for ip in parsed["ips"]] == ["10.1.0.2/24", "fd00::2/64"]
    assert parsed["dns"] == FULL["dns"]
    assert skel.parse_result({k: v for k, v in rendered.items() if k != "cniVersion"}, version)["ips"]


@pytest.mark.parametrize("bad", [
    [], {"ips": "x"}, {"ips": [{"address": "10.1.0.2"}]}, {"ips": [{"address": "10.1.0.2/24", "interface": "0"}]},
    {"ips": [{"address": "10.1.0.2/24", "gateway": "nope"}]}, {"routes": [{"dst": "x"}]}, {"interfaces": [{"mac": "x"}]},
    {"cniVersion": "7.0.0"}, {"dns": {"nameservers": "10.0.0.1"}}, {"cniVersion": "0.2.0", "ip4": {"ip": 5}},
])
def test_malformed_results_are_refused(bad):
    with pytest.raises(skel.CNIError) as err:
        skel.parse_result(bad, "1.0.0")
    assert err.value.code in (1, 6)


@pytest.mark.parametrize("text, expected", [
    ("", {}), ("IgnoreUnknown=1;K8S_POD_NAME=x;FOO=bar", {"IgnoreUnknown": "1", "K8S_POD_NAME": "x", "FOO": "bar"}),
    ("IP=10.0.0.5;", {"IP": "10.0.0.5"}), ("K8S_POD_NAMESPACE=ns;K8S_POD_UID=u", {"K8S_POD_NAMESPACE": "ns", "K8S_POD_UID": "u"}),
])
def test_cni_args(text, expected):
    assert skel.parse_cni_args(text) == expected


@pytest.mark.parametrize("text", ["FOO", "A=B=C", "FOO=bar", "IgnoreUnknown=0;FOO=bar", "=x"])
def test_bad_cni_args(text):
    with pytest.raises(skel.CNIError) as err:
        skel.parse_cni_args(text)
    assert err.value.code == 4 and "CNI_ARGS" in err.value.msg


@pytest.mark.parametrize("name", ["netctl-bridge", "netctl-overlay", "netctl-null"])
def test_a_main_plugin_named_as_ipam_is_refused_before_anything_runs(name):
    from cni_plugins import delegate

    with pytest.raises(skel.CNIError) as refused:
        delegate.call(None, None, name, "ADD")  # refused on the name alone: no request is looked at
    assert refused.value.code == 7 and "not an IPAM plugin" in refused.value.msg


def test_overlay_fast_path_key_becomes_the_network_option():
    from types import SimpleNamespace

    from cni_plugins.overlay import OverlayConf, network_spec

    base = dict(store="", vni=0, port=0, mtu=0, ipam=None, dns={})
    req = SimpleNamespace(name="ov")
    assert network_spec(req, OverlayConf(**base)).options == {}
    assert network_spec(req, OverlayConf(**{**base, "vni": 4242}, fast_path=False)).options == {
        "vni": "4242", "fastpath": "false"}
