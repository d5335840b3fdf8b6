#!/usr/bin/env python3
"""Benchmark of the container runner (issue #3): starting a container on a network, netctl beside
runc + the reference CNI plugins and podman, measured in the same run.

    sudo .venv/bin/python bench/bench_run.py            # full run (n=30 per figure, ~3-5 min)
    sudo .venv/bin/python bench/bench_run.py --quick    # smoke run (n=5)

Operations (each a whole command line, timed from start to exit):
  gateway   `run --rm --network N busybox ping -c1 <gateway>`: set up, run, tear down
  by-name   `run --rm --network N busybox ping -c1 peer`, peer a running container (netctl: hosts
            file; podman: aardvark-dns; runc + CNI has no name resolution, so it pings the peer's IP)
  true      `run --rm --network none busybox true`: the runner alone
  exec      `exec peer true`

runc + CNI is a floor, not a like-for-like peer (no overlay rootfs, no monitor, no DNS, no hosts or
resolv.conf): per iteration `ip netns add`, CNI ADD (bridge + host-local), `runc run`, CNI DEL, `ip
netns del`. With masquerade on (like netctl's default network) and off.
podman (Debian's) runs fully confined: its own containers.conf (runtime runc, rlimits within our hard
limit, cgroupfs), storage under the throwaway host's /run, netavark. What it writes to fixed places
anyway (/var/lib/containers/cache/blob-info-cache-v1.boltdb for root, whatever --root says) lands in
an overlay over /var whose upper layer is on the host's /run: nothing reaches the machine's disk.

netctl runs as installed: the console script (whose `run` and `exec` take the click-free path of
runner/fastcli.py), with a bytecode cache (PYTHONDONTWRITEBYTECODE, which development shells set, would
recompile every edited module on every call).

Everything runs inside a throwaway host (tests/harness.py), the timing loop included; cgroups (which are
machine-wide) are made under one parent and removed at the end. Nothing here asserts a time: the goals
(median <= 1.5x runc + CNI, <= 1/3 of podman) are reported.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    CommandError, Progress, Series, answer_worker_task, driver_parser, fmt_ms, format_table, measure_rounds,
    netctl_argv, private_var, root_namespace_state, run_cmd, run_worker_in_host, write_comparison,
)

CNI_PATH = "/usr/lib/cni"
WORK = "/run/bench-run"
NETCTL_SUBNET, NETCTL_GW = "10.99.0.0/24", "10.99.0.1"
CNI_SUBNET, CNI_GW = "10.97.0.0/24", "10.97.0.1"
PODMAN_SUBNET, PODMAN_GW = "10.96.0.0/24", "10.96.0.1"
TASK_TIMEOUT = 1800.0
GOAL_VS_RUNC, GOAL_VS_PODMAN = 1.5, 1 / 3


# ---- inside the throwaway host ----------------------------------------------------------------------


def use_bytecode_cache() -> None:
    """As an installed netctl has (see the module doc); set before the monitor starts, which inherits it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = f"{WORK}/pycache"


class Netctl:
    name = "netctl"

    def __init__(self, cgroup_parent: str, masquerade: bool = True):
        self.env = dict(os.environ, NETCTL_CGROUP_PARENT=f"{cgroup_parent}/netctl")
        self.cli = netctl_argv()
        self.net = "benchnet"
        self.run(["image", "build-busybox"])
        options = [] if masquerade else ["-o", "masquerade=false"]
        self.run(["network", "create", "--subnet", NETCTL_SUBNET, *options, self.net])
        self.run(["run", "-d", "--name", "peer", "--network", self.net, "busybox", "sleep", "100000"])  # starts the monitor

    def run(self, args: list[str]) -> str:
        return run_cmd(self.cli + args, env=self.env)

    def ops(self) -> dict[str, list[list[str]]]:
        run = ["run", "--rm", "--network", self.net, "busybox", "ping", "-c1", "-W1"]
        return {
            "gateway": [self.cli + run + [NETCTL_GW]],
            "by-name": [self.cli + run + ["peer"]],
            "true": [self.cli + ["run", "--rm", "--network", "none", "busybox", "true"]],
            "exec": [self.cli + ["exec", "peer", "true"]],
        }

    def memory(self) -> dict:
        """The monitor's memory with 1 and with 21 containers running (peer + 20 sleepers)."""
        one = json.loads(self.run(["monitor-stats"]))
        for i in range(20):
            self.run(["run", "-d", "--name", f"idle{i}", "--network", self.net, "busybox", "sleep", "100000"])
        many = json.loads(self.run(["monitor-stats"]))
        self.run(["rm", "-f", *[f"idle{i}" for i in range(20)]])
        return {"one": one, "twenty_one": many}

    def close(self) -> None:
        subprocess.run(self.cli + ["rm", "-f", "peer"], env=self.env, capture_output=True, timeout=60)


class RuncCni:
    """runc + CNI bridge/host-local; each iteration is a complete container life on a network."""

    def __init__(self, rootfs_tar: str, cgroup_parent: str, masquerade: bool):
        self.name = "runc-cni" + ("-masq" if masquerade else "")
        self.home = f"{WORK}/{self.name}"
        self.cgroup_parent = cgroup_parent
        os.makedirs(f"{self.home}/bundle/rootfs", exist_ok=True)
        run_cmd(["tar", "-xf", rootfs_tar, "-C", f"{self.home}/bundle/rootfs"])
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": self.name, "type": "bridge", "bridge": "cni-bench" + ("m" if masquerade else ""),
            "isGateway": True, "ipMasq": masquerade,
            "ipam": {"type": "host-local", "subnet": CNI_SUBNET if not masquerade else "10.95.0.0/24",
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{self.home}/ipam"},
        })  # fmt: skip
        self.gateway = CNI_GW if not masquerade else "10.95.0.1"
        self.counter = 0
        peer = self._netns("peer")
        self.peer_ip = json.loads(self._cni("ADD", "peer", peer))["ips"][0]["address"].split("/")[0]

    def _netns(self, name: str) -> str:
        run_cmd(["ip", "netns", "add", f"{self.name}-{name}"])
        return f"/run/netns/{self.name}-{name}"

    def _cni(self, command: str, container_id: str, netns: str) -> str:
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_NETNS=netns, CNI_IFNAME="eth0", CNI_PATH=CNI_PATH)
        return run_cmd([f"{CNI_PATH}/bridge"], env=env, stdin=self.conf)

    def _spec(self, args: list[str], netns: str, cid: str) -> None:
        bundle = f"{self.home}/bundle"
        config_path = f"{bundle}/config.json"
        if not os.path.exists(config_path):
            run_cmd(["runc", "spec", "--bundle", bundle])
        with open(config_path) as f:
            config = json.load(f)
        config["process"]["args"] = args
        config["process"]["terminal"] = False
        caps = config["process"]["capabilities"]
        for key in caps:
            if "CAP_NET_RAW" not in caps[key]:
                caps[key].append("CAP_NET_RAW")
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        config["root"] = {"path": "rootfs", "readonly": True}
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"] + [
            {"type": "network", "path": netns}
        ]
        config["linux"]["cgroupsPath"] = f"/{self.cgroup_parent}/runc/{cid}"
        with open(config_path, "w") as f:
            json.dump(config, f)

    def one(self, target: str) -> None:
        self.counter += 1
        cid = f"c{self.counter}"
        netns = self._netns(cid)
        self._cni("ADD", cid, netns)
        self._spec(["ping", "-c1", "-W1", target], netns, cid)
        run_cmd(["runc", "--root", f"{self.home}/state", "run", "--bundle", f"{self.home}/bundle", f"{self.name}-{cid}"])
        self._cni("DEL", cid, netns)
        run_cmd(["ip", "netns", "del", f"{self.name}-{cid}"])

    def ops(self):
        return {"gateway": lambda: self.one(self.gateway), "by-ip": lambda: self.one(self.peer_ip)}

    def close(self) -> None:
        pass  # the throwaway host takes the netns, bridges and rules with it


class Podman:
    name = "podman"

    def __init__(self, rootfs_tar: str, cgroup_parent: str):
        home = f"{WORK}/podman"
        for sub in ("net", "root", "runroot", "tmp"):
            os.makedirs(f"{home}/{sub}", exist_ok=True)
        with open(f"{home}/containers.conf", "w") as f:
            f.write(
                "[containers]\n"
                'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
                "[network]\n"
                'network_backend = "netavark"\n'
                f'network_config_dir = "{home}/net"\n'
                "[engine]\n"
                'runtime = "runc"\n'
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'events_logfile_path = "{home}/events.log"\n'
                f'tmp_dir = "{home}/tmp"\n'
                f'image_copy_tmp_dir = "{home}/tmp"\n'
                f'static_dir = "{home}/root/libpod"\n'
                f'volume_path = "{home}/root/volumes"\n'
            )
        with open(f"{home}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{home}/runroot"\ngraphroot = "{home}/root"\n')
        with open(f"{home}/registries.conf", "w") as f:
            f.write("")
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=f"{home}/containers.conf",
            CONTAINERS_STORAGE_CONF=f"{home}/storage.conf",
            CONTAINERS_REGISTRIES_CONF=f"{home}/registries.conf",
        )
        self.base = ["podman", "--root", f"{home}/root", "--runroot", f"{home}/runroot", "--tmpdir", f"{home}/tmp"]
        self.cgroup = ["--cgroup-parent", f"/{cgroup_parent}/podman"]
        self.run(["import", rootfs_tar, "localhost/busybox"])
        self.run(["network", "create", "--subnet", PODMAN_SUBNET, "benchnet"])
        self.run(["run", "-d", "--name", "peer", "--network", "benchnet", *self.cgroup, "localhost/busybox", "sleep", "100000"])
        self.has_dns = "aardvark" in self.run(["network", "inspect", "benchnet"]) or os.path.exists("/usr/lib/podman/aardvark-dns")

    def run(self, args: list[str]) -> str:
        return run_cmd(self.base + args, env=self.env)

    def ops(self):
        run = self.base + ["run", "--rm", "--network", "benchnet", *self.cgroup, "localhost/busybox", "ping", "-c1", "-W1"]
        ops = {
            "gateway": [run + [PODMAN_GW]],
            "true": [self.base + ["run", "--rm", "--network", "none", *self.cgroup, "localhost/busybox", "true"]],
            "exec": [self.base + ["exec", "peer", "true"]],
        }
        if self.has_dns:
            ops["by-name"] = [run + ["peer"]]
        return ops

    def close(self) -> None:
        subprocess.run(self.base + ["rm", "-f", "-a"], env=self.env, capture_output=True, timeout=120)


def worker(task: dict) -> dict:
    n, warmup, parent = task["n"], task["warmup"], task["cgroup_parent"]
    os.makedirs(WORK, exist_ok=True)
    private_var(WORK)
    use_bytecode_cache()
    series: list[Series] = []
    extra: dict = {}
    tarball = f"{WORK}/busybox-rootfs.tar"
    from runner import busybox

    with open(tarball, "wb") as f:
        busybox.build_tarball(busybox.DEFAULT_BUSYBOX, f)

    tools = []
    netctl = Netctl(parent)
    tools.append(netctl)
    subjects = task["subjects"]
    if "runc" in subjects:
        tools += [RuncCni(tarball, parent, masquerade=False), RuncCni(tarball, parent, masquerade=True)]
    if "podman" in subjects:
        try:
            tools.append(Podman(tarball, parent))
        except CommandError as err:
            extra["podman_error"] = str(err)
    try:
        operations = ["gateway", "by-name", "by-ip", "true", "exec"]
        for operation in operations:
            actions = {}
            for tool in tools:
                ops = tool.ops()
                if operation in ops:
                    env = getattr(tool, "env", None)
                    value = ops[operation]
                    actions[tool.name] = value if callable(value) else (lambda value=value, env=env: [run_cmd(a, env=env) for a in value])
            for result in measure_rounds(operation, actions, n, warmup):
                series.append(result)
                print(f"measured {result.tool} {operation}: median {result.median:.1f} ms", file=sys.stderr, flush=True)
        extra["monitor_memory"] = netctl.memory()
        extra["monitor_memory"]["smaps_rollup"] = _smaps_rollup(extra["monitor_memory"]["one"]["pid"])
    finally:
        for tool in tools:
            try:
                tool.close()
            except Exception:  # noqa: BLE001 - the throwaway host removes the rest
                pass
    return {"series": [s.to_dict() for s in series], "extra": extra}


def _smaps_rollup(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}
    except OSError:
        return {}


# ---- outside: the driver ------------------------------------------------------------------------------


def remove_cgroups(parent: str) -> None:
    for top in os.listdir("/sys/fs/cgroup"):
        base = os.path.join("/sys/fs/cgroup", top, parent)
        if os.path.isdir(base):
            for dirpath, _, _ in sorted(os.walk(base), key=lambda e: -e[0].count("/")):
                for _ in range(50):
                    try:
                        os.rmdir(dirpath)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)


def summarise(series: list[Series]) -> tuple[str, list[dict]]:
    by = {(s.tool, s.operation): s for s in series}
    rows, comparisons = [], []
    for operation in ("gateway", "by-name", "true", "exec"):
        for ours_tool in ("netctl",):
            ours = by.get((ours_tool, operation))
            if ours is not None:
                _compare(by, ours_tool, ours, operation, rows, comparisons)
    table = format_table(["operation", "tool", "median", "min", "peer", "peer med", "min", "ratio"], rows, numeric=(2, 3, 5, 6, 7))
    return table, comparisons


def _compare(by, ours_tool: str, ours: Series, operation: str, rows: list, comparisons: list) -> None:
    """One table row per peer that has the operation (runc + CNI pings by IP where others use names)."""
    peer_op = "gateway" if operation == "gateway" else "by-ip"
    peers = [("runc-cni", peer_op), ("runc-cni-masq", peer_op), ("podman", operation)]
    if operation in ("true", "exec"):
        peers = [("podman", operation)]
    for tool, op in peers:
        peer = by.get((tool, op))
        if peer is None:
            continue
        ratio = ours.median / peer.median
        comparisons.append({"operation": operation, "tool": ours_tool, "peer": tool, "peer_operation": op,
                            "netctl_median_ms": round(ours.median, 2), "peer_median_ms": round(peer.median, 2),
                            "ratio": round(ratio, 3)})  # fmt: skip
        rows.append([operation, ours_tool, fmt_ms(ours.median), fmt_ms(ours.minimum), f"{tool} ({op})",
                     fmt_ms(peer.median), fmt_ms(peer.minimum), f"{ratio:.2f}"])  # fmt: skip


def main() -> int:
    parser = driver_parser(__doc__, "n=5, one warm-up", "samples per figure (default 30, quick 5)")
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--no-runc", action="store_true")
    args = parser.parse_args()
    if answer_worker_task(args.worker, worker):
        return 0
    progress = Progress()
    n = args.n or (5 if args.quick else 30)
    parent = f"netctl-bench-{secrets.token_hex(3)}"
    subjects = [s for s, off in (("runc", args.no_runc), ("podman", args.no_podman)) if not off]
    task = {"n": n, "warmup": 1 if args.quick else 2, "cgroup_parent": parent, "subjects": subjects}
    before = root_namespace_state()
    load_before = os.getloadavg()
    progress(f"run benchmark: n={n}, subjects netctl + {', '.join(subjects) or 'nothing'}")
    try:
        result = run_worker_in_host("bench-run", os.path.abspath(__file__), task, TASK_TIMEOUT)
    finally:
        remove_cgroups(parent)
    series = [Series.from_dict(d) for d in result["series"]]
    table, comparisons = summarise(series)
    print(table)
    memory = result["extra"].get("monitor_memory", {})
    if memory:
        one, many = memory["one"], memory["twenty_one"]
        print(f"\nmonitor (one process for all containers): with 1 container RSS {one['VmRSS']} (anon {one['RssAnon']}); "
              f"with 21 containers RSS {many['VmRSS']} (anon {many['RssAnon']})")  # fmt: skip
    for c in comparisons:
        goal = GOAL_VS_PODMAN if c["peer"] == "podman" else GOAL_VS_RUNC
        if c["operation"] in ("gateway", "by-name"):
            print(f"goal {c['tool']} {c['operation']} vs {c['peer']}: ratio {c['ratio']:.2f} (goal <= {goal:.2f}): {'met' if c['ratio'] <= goal else 'NOT met'}")
    if "podman_error" in result["extra"]:
        print(f"podman skipped: {result['extra']['podman_error']}")
    after = root_namespace_state()
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)} (2 cores; other work shifts the absolute figures)")
    write_comparison("run", progress, task, series, comparisons, result["extra"], before, after,
                     load_average={"before": load_before, "after": load_after})
    return 0


if __name__ == "__main__":
    sys.exit(main())
