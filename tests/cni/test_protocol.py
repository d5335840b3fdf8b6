"""The CNI process contract (cni-conformance.md A1-A3, A11): environment, stdin, versions, error
objects. Each plugin runs as a subprocess exactly as libcni runs it, inside one throwaway host shared
by the module; every case here fails before creating anything, and the last test checks that."""

from __future__ import annotations

import json
import os

import pytest

from cni_plugins import launch, skel
from cni.helpers import bridge_conf

pytestmark = pytest.mark.kernel

PLUGINS = ("netctl-bridge", "netctl-overlay", "netctl-null", "netctl-ipam")
NS = "/run/netns/protocol"


@pytest.fixture(scope="module")
def cni(module_cni):
    module_cni.netns("protocol")
    yield module_cni
    # Every refusal left nothing behind (checked per host: tests may spread over xdist workers).
    # Only the networks of the few successful ADDs stay, as CNI networks do.
    assert module_cni.endpoint_addresses() == []
    assert module_cni.sandboxes() == []
    assert set(module_cni.links()) == {"lo"}
    assert module_cni.inspect("p1") is None


def ipam_conf(name="p-ipam", **extra):
    conf = {"cniVersion": "1.0.0", "name": name, "type": "bridge",
            "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.61.0.0/24"}]]}}
    conf.update(extra)
    return conf


def add(cni, plugin="netctl-bridge", conf=None, **kw):
    options = {"cid": "c1", "netns": NS, "ifname": "eth0"}
    options.update(kw)
    return cni.run(plugin, "ADD", bridge_conf("p1", "10.61.0.0/24") if conf is None else conf, **options)


# --- A1: process contract and environment ---------------------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS)
def test_version_answers_with_every_version_and_echoes_the_requested_one(cni, plugin):
    reply = cni.run(plugin, "VERSION", {"cniVersion": "0.4.0"}, netns="dummy", ifname="dummy")
    assert reply.ok and reply.json == {"cniVersion": "0.4.0", "supportedVersions": list(skel.SPEC_VERSIONS)}
    # libcni's probe may send anything (or a version we do not know): still an answer
    assert cni.run(plugin, "VERSION", "not json").json["cniVersion"] == skel.CURRENT
    assert cni.run(plugin, "VERSION", {"cniVersion": "9.9.9"}).json["cniVersion"] == skel.CURRENT


def test_the_launcher_and_the_skel_list_the_same_versions():
    assert json.loads(launch.SUPPORTED) == list(skel.SPEC_VERSIONS)


def test_empty_command_prints_the_about_banner_and_does_nothing(cni):
    reply = cni.run("netctl-bridge", "", bridge_conf("p1"), cid="c1", netns=NS, ifname="eth0")
    assert reply.ok and reply.stdout == ""
    assert "CNI protocol versions supported" in reply.stderr


def test_unknown_command_is_code_4(cni):
    error = cni.run("netctl-bridge", "BOGUS", bridge_conf("p1"), cid="c1", netns=NS, ifname="eth0").error()
    assert error == {"cniVersion": skel.CURRENT, "code": 4, "msg": "unknown CNI_COMMAND: BOGUS"}


@pytest.mark.parametrize("command, missing", [
    ("ADD", ["CNI_NETNS"]), ("ADD", ["CNI_CONTAINERID"]), ("ADD", ["CNI_PATH"]), ("ADD", ["CNI_IFNAME", "CNI_PATH"]),
    ("CHECK", ["CNI_NETNS"]), ("DEL", ["CNI_CONTAINERID"]), ("GC", ["CNI_PATH"]),
])
@pytest.mark.parametrize("how", ["empty", "unset"])  # libcni exports all six, empty when unused
def test_missing_variables_are_code_4_and_named(cni, command, missing, how):
    values = {"cid": "c1", "netns": NS, "ifname": "eth0", "path": None}
    for variable in missing:
        values[{"CNI_CONTAINERID": "cid", "CNI_NETNS": "netns", "CNI_IFNAME": "ifname", "CNI_PATH": "path"}[variable]] = ""
    reply = cni.run("netctl-bridge", command, bridge_conf("p1", version="1.1.0"),
                    unset=tuple(missing) if how == "unset" else (), **values)
    error = reply.error()
    assert error["code"] == 4
    assert error["msg"] == f"required env variables [{' '.join(missing)}] missing"


def test_del_needs_no_netns(cni):
    assert cni.run("netctl-bridge", "DEL", bridge_conf("p1"), cid="never-added", ifname="eth0").ok


@pytest.mark.parametrize("cid", ["a/b", "-lead", "sp ace", "é", "x;y"])
def test_invalid_container_ids_are_code_4(cni, cid):
    error = add(cni, cid=cid).error()
    assert (error["code"], error["msg"]) == (4, "invalid characters in containerID")


@pytest.mark.parametrize("ifname, msg", [
    ("abcdefghijklmnop", "interface name is too long"),
    (".", "interface name is . or .."),
    ("a/b", "interface name contains / or : or whitespace characters"),
    ("a:b", "interface name contains / or : or whitespace characters"),
    ("a b", "interface name contains / or : or whitespace characters"),
])
def test_invalid_interface_names_are_code_4(cni, ifname, msg):
    error = add(cni, ifname=ifname).error()
    assert (error["code"], error["msg"]) == (4, msg)


@pytest.mark.parametrize("netns, code", [("/nonexistent", 4), ("/etc/hostname", 4), ("/proc/self/ns/net", 8),
                                         ("/proc/1/ns/net", 8)])
def test_a_netns_that_is_not_a_container_namespace_is_refused(cni, netns, code):
    # /proc/1/ns/net is the host's own namespace: configuring it as a container's would break the host
    assert add(cni, netns=netns).error()["code"] == code
    # DEL of a namespace that is gone (or never was one) succeeds; of the host's own it is refused
    reply = cni.run("netctl-null", "DEL", {"cniVersion": "1.0.0", "name": "p1"}, cid="c1", netns=netns, ifname="lo")
    if code == 8:
        assert reply.error()["code"] == 8
    else:
        assert reply.ok, reply


@pytest.mark.parametrize("args, ok", [
    ("FOO", False), ("A=B=C", False), ("FOO=bar", False),
    ("IgnoreUnknown=1;FOO=bar;K8S_POD_NAME=x", True), ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=x", True),
    ("IgnoreUnknown=true;FOO=", True),
])
def test_cni_args(cni, args, ok):
    reply = cni.run("netctl-ipam", "ADD", ipam_conf(), cid="args", netns=NS, ifname="eth0", args=args)
    if ok:
        assert reply.ok, reply
        assert cni.run("netctl-ipam", "DEL", ipam_conf(), cid="args", netns=NS, ifname="eth0").ok
    else:
        error = reply.error()
        assert error["code"] == 4 and error["msg"].startswith("CNI_ARGS:")


def test_a_missing_ipam_plugin_is_reported_with_the_path_searched(cni):
    conf = bridge_conf("p1", "10.61.0.0/24")
    conf["ipam"] = {"type": "no-such-ipam"}
    error = add(cni, conf=conf).error()
    assert error["msg"] == f'failed to find plugin "no-such-ipam" in path [{cni.plugin_dir} /usr/lib/cni]'
    conf["ipam"] = {"type": "../../bin/sh"}
    assert "failed to find plugin" in add(cni, conf=conf).error()["msg"]


def test_delegating_to_a_main_plugin_is_refused_not_looped(cni):
    conf = bridge_conf("p1", "10.61.0.0/24")
    conf["ipam"] = {"type": "netctl-bridge"}
    assert add(cni, conf=conf).error()["code"] == 7


@pytest.mark.parametrize("name, msg", [(None, "missing network name"), ("", "missing network name"),
                                       ("a/b", "invalid characters found in network name"),
                                       (7, "invalid characters found in network name")])
def test_network_name_is_code_7(cni, name, msg):
    conf = bridge_conf("p1")
    conf["name"] = name
    if name is None:
        del conf["name"]
    for plugin in PLUGINS:
        error = add(cni, plugin, conf).error()
        assert (error["code"], error["msg"]) == (7, msg)


def test_a_minimal_environment_is_enough(cni):
    """A1-12: no HOME, no PATH, no TTY, cwd / : only the CNI variables."""
    argv = ["env", "-i", "CNI_COMMAND=ADD", "CNI_CONTAINERID=minimal", f"CNI_NETNS={NS}", "CNI_IFNAME=eth0",
            "CNI_ARGS=", f"CNI_PATH={cni.plugin_dir}", "NETCTL_ROOT=/run/netctl", f"{cni.plugin_dir}/netctl-ipam"]
    done = cni.host.run(*argv, input=json.dumps(ipam_conf()), check=False)
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["ips"][0]["address"].startswith("10.61.0.")
    assert cni.run("netctl-ipam", "DEL", ipam_conf(), cid="minimal", ifname="eth0").ok


# --- A2/A3: configuration and versions ------------------------------------------------------------


@pytest.mark.parametrize("stdin", ["{", "", "[]", '"x"', "null", '{"cniVersion": 1, "name": "p1"}',
                                   "\ufeff{}", "[" * 50000 + "]" * 50000])
def test_malformed_configuration_is_code_6(cni, stdin):
    assert add(cni, conf=stdin).error()["code"] == 6


@pytest.mark.parametrize("version", ["9.9.9", "1.1", "abc", "0.5.0"])
def test_unsupported_versions_are_code_1(cni, version):
    error = add(cni, conf=bridge_conf("p1", version=version)).error()
    assert error["code"] == 1 and error["msg"] == "incompatible CNI versions"
    assert error["details"].startswith(f'config is "{version}", plugin supports')


@pytest.mark.parametrize("command, version", [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")])
def test_verbs_newer_than_the_config_version_are_code_1(cni, command, version):
    error = cni.run("netctl-bridge", command, bridge_conf("p1", version=version), cid="c1", netns=NS,
                    ifname="eth0").error()
    assert error["code"] == 1 and error["msg"] == f"config version does not allow {command}"


@pytest.mark.parametrize("key, value, code", [
    ("promiscMode", True, 2), ("vlan", 100, 2), ("macspoofchk", True, 2), ("mtu", "big", 7), ("mtu", 70000, 7),
    ("ipMasq", "yes", 7), ("bridge", "bad/name", 7), ("bridge", "x" * 16, 7), ("ipam", {}, 7),
    ("ipam", {"type": "netctl-ipam"}, 7), ("dns", {"nameservers": "1.1.1.1"}, 7),
    ("runtimeConfig", {"portMappings": [{"hostPort": 0, "containerPort": 80}]}, 7),
    ("runtimeConfig", {"mac": "zz"}, 7), ("runtimeConfig", {"ips": ["10.61.0.5", "10.61.0.6"]}, 2),
    ("prevResult", {"ips": [{"address": "not-an-ip"}]}, 6),
])
def test_invalid_values_name_the_key(cni, key, value, code):
    conf = bridge_conf("p1", "10.61.0.0/24")
    conf[key] = value
    error = add(cni, conf=conf).error()
    assert error["code"] == code, error
    if code == 2:
        assert key in error["msg"]


@pytest.mark.parametrize("ranges, code", [
    ([[{"subnet": "10.61.0.1/24"}]], 7),  # host bits
    ([[{"subnet": "10.61.0.0/31"}]], 7),  # too small
    ([[{"subnet": "10.61.0.0/24"}], [{"subnet": "10.62.0.0/24"}]], 2),  # two IPv4 range sets
    ([[{"subnet": "10.61.0.0/24"}, {"subnet": "fd00::/64"}]], 7),  # mixed families
    ([[{"subnet": "10.61.0.0/24", "rangeStart": "10.62.0.1"}]], 7),
    ([[{"subnet": "10.61.0.0/24", "rangeStart": "10.61.0.9", "rangeEnd": "10.61.0.3"}]], 7),
    ([], 7),
])
def test_invalid_ipam_ranges(cni, ranges, code):
    conf = ipam_conf("p1")
    conf["ipam"]["ranges"] = ranges
    assert cni.run("netctl-ipam", "ADD", conf, cid="c1", netns=NS, ifname="eth0").error()["code"] == code


def test_install_replaces_executables_atomically(tmp_path):
    """A1-13: written beside the final name, renamed into place; executable; nothing else left."""
    from cni_plugins import install

    directory = tmp_path / "bin"
    for _ in range(2):
        written = install.install(str(directory))
    assert sorted(os.listdir(directory)) == ["netctl-bridge", "netctl-ipam", "netctl-null", "netctl-overlay"] == sorted(
        os.path.basename(p) for p in written)
    for name in os.listdir(directory):
        assert os.access(directory / name, os.X_OK)
        assert (directory / name).read_text().startswith("#!/") and "-IS" in (directory / name).read_text().splitlines()[0]
