"""Fuzzing netctl-overlay with hypothesis against a real store: a one-host lab with `netctl daemon
--store` (etcd inside the lab's switch); this file, run as a script INSIDE the host, generates
mutated overlay configurations (tests/cni/fuzz_inside.py's hostile values) and environments.

Properties, for every example: never a traceback; a failure is a non-zero exit with a spec error
object on stdout and changes nothing (container links, this host's overlay segments and sandboxes,
and in etcd the networks and the addresses held); a successful ADD is undone by a DEL of the same
request (networks it created may stay, as in CNI). `store` takes only values naming the lab's own
etcd, a closed port of the lab's switch, or malformed text: no example ever sends a packet anywhere
else."""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = int(os.environ.get("NETCTL_CNI_OVERLAY_FUZZ_EXAMPLES", "300"))
NETNS = "/run/netns/fuzz"
ROOT = "/run/netctl"
SAMPLE_EVERY = 25
OVERLAY_KEYS = ["cniVersion", "name", "type", "vni", "port", "mtu", "ipMasq", "ipam", "dns", "runtimeConfig", "args",
                "prevResult", "capabilities", "cni.dev/valid-attachments", "store"]


def test_hostile_overlay_input_never_breaks_the_protocol_or_leaves_state(tmp_path, plugin_dir):
    pytest.importorskip("hypothesis")
    import harness

    from overlay.agent_helpers import start_daemon
    from overlay.conftest import _require_etcd
    from overlay.lab import netctl_lab

    missing = harness.missing_host_prerequisites()
    if missing:
        pytest.skip(missing)
    _require_etcd()
    with netctl_lab(1, register=False) as lab:
        (h1,) = lab.hosts
        daemon = start_daemon(lab, h1, str(tmp_path))
        try:
            done = h1.run(sys.executable, __file__, "--examples", str(EXAMPLES), "--plugin-dir", plugin_dir,
                          "--store", lab.etcd_url, check=False, timeout=540,
                          env={"HYPOTHESIS_STORAGE_DIRECTORY": "/run/hypothesis"})
        finally:
            daemon.stop()
    print(done.stdout[-2000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["examples"] >= EXAMPLES * 0.9
    assert summary["outcomes"].get("ok ADD", 0) >= 10  # mutations still reach the store and the kernel
    assert summary["outcomes"].get("subprocess", 0) >= 5
    assert not [m for m in summary["internal"] if "internal error" in m], summary["internal"]  # a bug, not a refusal


# --- inside the host ---------------------------------------------------------------------------------


def inside(argv: list[str]) -> int:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import fuzz_inside as shared  # the hostile JSON values and environments of the other plugins' fuzz

    from cni_plugins import overlay, skel
    from libnetwork.controller import Controller

    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--plugin-dir", required=True)
    parser.add_argument("--store", required=True)
    args = parser.parse_args(argv)
    counts: collections.Counter = collections.Counter()
    stores = [args.store, args.store, "etcd://198.18.0.254:1", "http://x/y", "", "etcd://", "etcd://198.18.0.254:99999"]
    subprocess.run(["ip", "netns", "add", "fuzz"], check=True)
    context = skel.Context()
    controller = Controller(ROOT)

    def state() -> dict:
        from libnetwork.netlink import Netlink

        with Netlink(NETNS) as ns:
            links = sorted(link.name for link in ns.links())
        with controller.global_store.snapshot() as g:
            held = sorted(a for _, a, owner in g.allocations() if not owner.startswith(("gateway:", "aux:")))
            networks = sorted(n.name for n in g.list_networks())
        segments = sorted(os.listdir(f"{ROOT}/overlay")) if os.path.isdir(f"{ROOT}/overlay") else []
        return {"container links": links, "addresses": held, "networks": networks, "segments": segments,
                "sandboxes": sorted(s.name for s, _ in controller.list_sandboxes())}

    baseline = [state()]
    internal: list[str] = []  # code 999 messages: each must be a deliberate one, not a bug
    examples = [0]

    def invoke(env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
        env = {k: (args.plugin_dir if v == "PLUGINS" else v) for k, v in env.items() if "\x00" not in v}
        env["NETCTL_ROOT"] = ROOT
        examples[0] += 1
        if examples[0] % SAMPLE_EVERY == 0:
            counts["subprocess"] += 1
            done = subprocess.run([f"{args.plugin_dir}/netctl-overlay"], input=stdin, capture_output=True, env=env,
                                  timeout=60)
            return done.returncode, done.stdout, done.stderr
        return skel.run(overlay, env, stdin, context)

    def check(env: dict[str, str], stdin: bytes) -> None:
        status, out, err = invoke(env, stdin)
        assert b"Traceback" not in out + err, (out, err)
        if status != 0:
            reply = json.loads(out)
            assert isinstance(reply, dict) and isinstance(reply["code"], int) and isinstance(reply["msg"], str), reply
            counts[f"error {reply['code']}"] += 1
            if reply["code"] == 999:
                internal.append(reply["msg"][:160])
            after = state()
            assert after == baseline[0], {"before": baseline[0], "after": after, "reply": reply}
            return
        command = env["CNI_COMMAND"]
        if command in ("", "VERSION"):
            counts[command or "about"] += 1
            return
        if command == "ADD":
            assert json.loads(out)["cniVersion"], out
            counts["ok ADD"] += 1
            undo = skel.run(overlay, {**env, "CNI_COMMAND": "DEL", "NETCTL_ROOT": ROOT,
                                      "CNI_PATH": args.plugin_dir if env["CNI_PATH"] == "PLUGINS" else env["CNI_PATH"]},
                            stdin, context)
            assert undo[0] == 0 and undo[1] == b"", undo
        else:
            assert out == b"", out
            counts[f"ok {command}"] += 1
        after = state()
        for key in ("container links", "addresses", "segments", "sandboxes"):
            assert after[key] == baseline[0][key], {"key": key, "before": baseline[0], "after": after}
        baseline[0] = after  # a network an ADD created may stay, as in CNI

    def base_config(version: str) -> dict:
        return {"cniVersion": version, "name": "fzo", "type": "netctl-overlay",
                "ipam": {"type": "netctl-ipam", "ranges": [[{"subnet": "10.46.0.0/24"}]]}}

    @st.composite
    def configs(draw) -> bytes:
        conf = base_config(draw(st.sampled_from(list(skel.SPEC_VERSIONS))))
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            where = draw(st.sampled_from(["top", "ipam", "runtime"]))
            if where == "top":
                key, section = draw(st.sampled_from(OVERLAY_KEYS)), conf
            elif where == "ipam" and isinstance(conf.get("ipam"), dict):
                key, section = draw(st.sampled_from(shared.IPAM_KEYS)), conf["ipam"]
            else:
                conf.setdefault("runtimeConfig", {})
                section = conf["runtimeConfig"] if isinstance(conf["runtimeConfig"], dict) else conf
                key = draw(st.sampled_from(shared.RUNTIME_KEYS))
            if draw(st.booleans()) and key in section:
                del section[key]
            elif key == "store":
                section[key] = draw(st.sampled_from(stores))
            else:
                section[key] = draw(shared.json_values)
        text = json.dumps(conf)
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            text = text[: draw(st.integers(min_value=0, max_value=len(text)))]
        return text.encode()

    common = settings(database=None, deadline=None, derandomize=True, print_blob=True,
                      suppress_health_check=list(HealthCheck))

    @settings(common, max_examples=int(args.examples * 0.75))
    @given(configs(), shared.plausible_environments)
    def mutated_configs(stdin, env):
        check(dict(env, CNI_COMMAND=env["CNI_COMMAND"] if env["CNI_COMMAND"] != "VERSION" else "ADD"), stdin)

    @settings(common, max_examples=int(args.examples * 0.25))
    @given(shared.environments)
    def hostile_environments(env):
        check(env, json.dumps(base_config("1.1.0")).encode())

    mutated_configs()
    hostile_environments()
    print(json.dumps({"examples": examples[0], "outcomes": dict(sorted(counts.items())), "internal": internal}))
    return 0


if __name__ == "__main__":
    sys.exit(inside(sys.argv[1:]))
