"""Fuzz the netctl CNI plugins with hypothesis; run INSIDE a throwaway host (tests/cni/test_fuzz.py).

Generated: configurations mutated from valid ones (keys removed, retyped, replaced by hostile values),
raw stdin bytes, and hostile environments (every CNI_* variable). Most examples run in-process through
skel.run (the function the executables and the service run); every SAMPLE_EVERY-th runs the real
executable as a subprocess. Properties, for every example:

  * never a traceback; a failure is exit status non-zero and a spec error object on stdout
    ({code: int, msg: str}); a success prints a result (ADD) or nothing (DEL, CHECK, GC, STATUS);
  * a failure changes nothing: the host's links, the container namespace's links, netctl's networks,
    endpoints and sandboxes, and netctl's nftables tables are as before;
  * a successful ADD is undone by a DEL of the same request, leaving no endpoint, sandbox or veth.

Prints a JSON summary on stdout; exits non-zero (with hypothesis's falsifying example) on a failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from cni_plugins import skel  # noqa: E402
from cni_plugins.plugins import load_plugin  # noqa: E402
from libnetwork.controller import Controller  # noqa: E402
from libnetwork.netlink import Netlink  # noqa: E402

NETNS = "/run/netns/fuzz"
ROOT = "/run/netctl"
SAMPLE_EVERY = 20
PLUGINS = ("bridge", "ipam", "null")
COUNTS: collections.Counter = collections.Counter()

INTERESTING_TEXT = ["", " ", "x" * 300, "10.0.0.0/8", "10.45.0.0/24", "10.45.0.1", "10.45.0.5/24", "fd00:45::/64",
                    "0.0.0.0/0", "::/0", "255.255.255.255", "10.45.0.0/31", "224.0.0.0/24", "127.0.0.0/8",
                    "netctl-ipam", "netctl-bridge", "netctl-null", "host-local", "../../bin/sh", "/etc/passwd",
                    "eth0", "lo", "br0", "cni0", "nc-x", "02:42:ac:11:00:02", "ff:ff:ff:ff:ff:ff", "zz",
                    "1.1.0", "0.2.0", "9.9.9", "tcp", "udp", "\u00e9\u00e8", "\x00", "a\nb", "%s%n", "${HOME}"]
json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(INTERESTING_TEXT) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(["subnet", "gateway", "dst", "gw", "address", "type",
                                                              "hostPort", "containerPort", "protocol", "x"]) | st.text(max_size=8),
                                             inner, max_size=4), max_leaves=12)

BRIDGE_KEYS = ["cniVersion", "name", "type", "bridge", "mtu", "ipMasq", "hairpinMode", "isGateway", "promiscMode",
               "vlan", "portIsolation", "ipam", "dns", "runtimeConfig", "args", "prevResult", "capabilities",
               "cni.dev/valid-attachments", "cni.dev/attachments"]
IPAM_KEYS = ["type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "resolvConf"]
RUNTIME_KEYS = ["ips", "mac", "portMappings", "aliases", "ipRanges"]


def base_config(plugin: str, version: str) -> dict:
    conf = {"cniVersion": version, "name": "fz", "type": f"netctl-{plugin}"}
    if plugin != "null":
        conf.update(bridge="fzbr0", isGateway=True,
                    ipam={"type": "netctl-ipam", "ranges": [[{"subnet": "10.45.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]})
    return conf


@st.composite
def configs(draw) -> bytes:
    plugin = draw(st.sampled_from(PLUGINS))
    conf = base_config(plugin, draw(st.sampled_from(list(skel.SPEC_VERSIONS))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.sampled_from(["top", "ipam", "runtime", "range"]))
        if where == "top":
            key, section = draw(st.sampled_from(BRIDGE_KEYS)), conf
        elif where == "ipam" and isinstance(conf.get("ipam"), dict):
            key, section = draw(st.sampled_from(IPAM_KEYS)), conf["ipam"]
        elif where == "range" and isinstance(conf.get("ipam"), dict) and isinstance(conf["ipam"].get("ranges"), list) \
                and conf["ipam"]["ranges"] and isinstance(conf["ipam"]["ranges"][0], list) and conf["ipam"]["ranges"][0] \
                and isinstance(conf["ipam"]["ranges"][0][0], dict):
            key, section = draw(st.sampled_from(["subnet", "rangeStart", "rangeEnd", "gateway"])), conf["ipam"]["ranges"][0][0]
        else:
            conf.setdefault("runtimeConfig", {})
            section = conf["runtimeConfig"] if isinstance(conf["runtimeConfig"], dict) else conf
            key = draw(st.sampled_from(RUNTIME_KEYS))
        if draw(st.booleans()) and key in section:
            del section[key]
        else:
            section[key] = draw(json_values)
    conf.pop("netctlRoot", None)  # the state root stays the host's private one
    text = json.dumps(conf)
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # sometimes: damaged JSON
        text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
    return plugin, text.encode()


raw_inputs = st.tuples(st.sampled_from(PLUGINS), st.binary(max_size=200) | st.sampled_from(
    [b"", b"{", b"[]", b"null", b'{"cniVersion":"1.1.0"}', b"\xff\xfe", b"[" * 3000, b'{"name":"fz","cniVersion":"1.0.0"}']))

environments = st.fixed_dictionaries({
    "CNI_COMMAND": st.sampled_from(["ADD"] * 4 + ["DEL", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "BOGUS"]),
    "CNI_CONTAINERID": st.sampled_from(["fz1", "fz1", "fz1", "", "a/b", "-x", "x" * 300]) | st.text(max_size=12),
    "CNI_NETNS": st.sampled_from([NETNS] * 5 + ["", "/nonexistent", "/proc/self/ns/net", "/proc/1/ns/net",
                                               "/etc/hostname", "/dev/null", "/run/netns"]) | st.text(max_size=12),
    "CNI_IFNAME": st.sampled_from(["eth0"] * 4 + ["", "lo", "x" * 16, ".", "a/b", "a b", "eth1"]) | st.text(max_size=6),
    "CNI_ARGS": st.sampled_from(["", "", "IgnoreUnknown=1;K8S_POD_NAME=p", "IP=10.45.0.9", "MAC=02:00:00:00:00:09",
                                 "FOO", "A=B=C", ";;", "IgnoreUnknown=1;IP=zz"]) | st.text(max_size=12),
    "CNI_PATH": st.sampled_from(["PLUGINS", "PLUGINS", "", ":", "/nonexistent"]),
})

# Mostly well-formed environments, so that mutated configurations get past the environment checks
# and reach configuration parsing, IPAM and the kernel.
plausible_environments = st.integers(min_value=0, max_value=4).flatmap(lambda i: environments if i == 0 else st.fixed_dictionaries({
    "CNI_COMMAND": st.sampled_from(["ADD"] * 6 + ["DEL", "CHECK", "GC", "STATUS"]),
    "CNI_CONTAINERID": st.just("fz1"), "CNI_NETNS": st.just(NETNS), "CNI_IFNAME": st.just("eth0"),
    "CNI_ARGS": st.sampled_from(["", "IgnoreUnknown=1;K8S_POD_NAME=p", "IP=10.45.0.9"]), "CNI_PATH": st.just("PLUGINS"),
}))


class Fuzzer:
    def __init__(self, plugin_dir: str):
        self.plugin_dir = plugin_dir
        self.context = skel.Context()
        self.controller = Controller(ROOT)
        self.host = Netlink()
        self.examples = 0
        self.baseline = self.state()
        self.baseline_nft = self.nft()

    def state(self) -> dict:
        with Netlink(NETNS) as inside:
            container = sorted(link.name for link in inside.links())
        return {"host links": sorted(link.name for link in self.host.links()), "container links": container,
                "networks": sorted(n.name for n in self.controller.list_networks()),
                "sandboxes": sorted(s.name for s, _ in self.controller.list_sandboxes())}

    @staticmethod
    def nft() -> str:
        return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30).stdout

    def invoke(self, plugin: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
        env = {k: (self.plugin_dir if v == "PLUGINS" else v) for k, v in env.items()}
        env = {k: v for k, v in env.items() if "\x00" not in v}
        env["NETCTL_ROOT"] = ROOT
        self.examples += 1
        if self.examples % SAMPLE_EVERY == 0:
            COUNTS["subprocess"] += 1
            done = subprocess.run([f"{self.plugin_dir}/netctl-{plugin}"], input=stdin, capture_output=True,
                                  env=env, timeout=60)
            return done.returncode, done.stdout, done.stderr
        return skel.run(load_plugin(plugin), env, stdin, self.context)

    def check(self, plugin: str, env: dict[str, str], stdin: bytes) -> None:
        status, out, err = self.invoke(plugin, env, stdin)
        assert b"Traceback" not in out + err, (out, err)
        command = env["CNI_COMMAND"]
        if status != 0:
            reply = json.loads(out)
            assert isinstance(reply, dict) and isinstance(reply["code"], int) and isinstance(reply["msg"], str), reply
            COUNTS[f"error {reply['code']}"] += 1
            after = self.state()
            assert after == self.baseline, {"before": self.baseline, "after": after, "reply": reply}
            return
        if command == "":
            assert out == b""
            COUNTS["about"] += 1
            return
        if command == "VERSION":
            assert json.loads(out)["supportedVersions"]
            COUNTS["version"] += 1
            return
        if command != "ADD":
            assert out == b"", out
            COUNTS[f"ok {command}"] += 1
            self.settle()
            return
        result = json.loads(out)
        assert isinstance(result, dict) and result["cniVersion"], result
        COUNTS["ok ADD"] += 1
        undo = dict(env, CNI_COMMAND="DEL")
        status, out, err = skel.run(load_plugin(plugin), {**undo, "NETCTL_ROOT": ROOT,
                                    "CNI_PATH": self.plugin_dir if env["CNI_PATH"] == "PLUGINS" else env["CNI_PATH"]},
                                    stdin, self.context)
        assert status == 0 and out == b"", (out, err)
        self.settle()

    def settle(self) -> None:
        """After a success: no attachment may stay; the network (and its bridge) may, as in CNI."""
        state = self.state()
        assert state["sandboxes"] == [] and state["container links"] == self.baseline["container links"], state
        assert not [n for n in state["host links"] if n.startswith("nv")], state
        self.baseline = state
        self.baseline_nft = self.nft()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--plugin-dir", required=True)
    parser.add_argument("--random", action="store_true", help="new examples each run (the test suite's are fixed)")
    args = parser.parse_args()
    subprocess.run(["ip", "netns", "add", "fuzz"], check=True)
    fuzzer = Fuzzer(args.plugin_dir)
    common = settings(database=None, deadline=None, derandomize=not args.random, print_blob=True,
                      suppress_health_check=list(HealthCheck))
    share = {"configs": 0.6, "raw": 0.15, "env": 0.25}

    @settings(common, max_examples=int(args.examples * share["configs"]))
    @given(configs(), plausible_environments)
    def mutated_configs(case, env):
        plugin, stdin = case
        fuzzer.check(plugin, dict(env, CNI_COMMAND=env["CNI_COMMAND"] if env["CNI_COMMAND"] != "VERSION" else "ADD"), stdin)

    @settings(common, max_examples=int(args.examples * share["raw"]))
    @given(raw_inputs, environments)
    def raw_stdin(case, env):
        fuzzer.check(case[0], env, case[1])

    @settings(common, max_examples=int(args.examples * share["env"]))
    @given(st.sampled_from(PLUGINS), environments)
    def hostile_environments(plugin, env):
        fuzzer.check(plugin, env, json.dumps(base_config(plugin, "1.1.0")).encode())

    for test in (mutated_configs, raw_stdin, hostile_environments):
        test()
    assert fuzzer.nft() == fuzzer.baseline_nft, "nftables changed outside a successful ADD"
    print(json.dumps({"examples": fuzzer.examples, "outcomes": dict(sorted(COUNTS.items()))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
