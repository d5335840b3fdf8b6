#!/usr/bin/env python3
"""Benchmark of registry pulls and pushes (issue #12): netctl beside podman and skopeo, same run.

    sudo .venv/bin/python bench/bench_pull.py            # full run (n=10 per figure, ~3-4 min)
    sudo .venv/bin/python bench/bench_pull.py --quick    # smoke run (n=3)

The image: 4 layers, ~60 MB as stored in the registry (gzip): busybox, then three layers of ~30 MB
each uncompressed (files half random, half text-like, so gzip halves them as it does real images).
It is built as an OCI layout and put into a real docker-registry (distribution 2.8) with skopeo, both
inside a throwaway host; the registry listens on that host's loopback (localhost:5000, plain HTTP).

Operations (each a whole command line, timed from start to exit, round-robin between tools):
  cold   pull with nothing present. netctl `image pull` (download, verify, unpack into its store);
         `podman pull` (the same into containers/storage, overlay driver); `skopeo copy` to a `dir:`
         (download and verify only, no unpacking: a floor, not a like-for-like peer). Between rounds
         each tool's copy is removed (untimed).
  warm   pull with everything present: one manifest HEAD and the bookkeeping. netctl twice: the
         `netctl` command as installed (netctl/entry.py sends only run/exec to the click-free
         runner/fastcli.py, so this pays click and the CLI's imports), and `python -m runner.fastcli
         image pull` (what `netctl pull` costs once entry.py also sends pull there); podman.
  push   the image into a second, empty registry (its storage wiped between rounds, untimed): netctl
         `image push` of the pulled image beside `skopeo copy` from the `dir:` copy (no recompression
         on either side).

podman and skopeo are confined as in bench_run.py: their own storage and configuration under the
host's /run, and an overlay over /var (their blob-info cache) whose writable layer is on /run.
Goals (reported, never asserted): cold <= 1.0x podman; warm <= 50 ms.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    REPO_DIR, CommandError, Progress, Series, answer_worker_task, driver_parser, fmt_ms, format_table, measure_rounds,
    netctl_argv, private_var, root_namespace_state, run_cmd, run_worker_in_host, write_comparison,
)

WORK = "/run/bench-pull"
REGISTRY_BIN = "/usr/bin/docker-registry"
IMAGE = "localhost:5000/bench/app:1"
TASK_TIMEOUT = 3600.0
GOAL_COLD_VS_PODMAN, GOAL_WARM_MS = 1.0, 50.0
LAYER_MB = 30  # uncompressed, each of three layers


# ---- inside the throwaway host ----------------------------------------------------------------------


def _layer(seed: int) -> bytes:
    """~LAYER_MB MB of files: half random bytes, half words (gzip about halves the layer)."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(4000)]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"opt/layer{seed}")
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
        tar.addfile(info)
        for i in range(LAYER_MB):
            if i % 2:
                data = rng.randbytes(1 << 20)
            else:
                text = b" ".join(rng.choice(words) for _ in range(200_000))
                data = text[: 1 << 20].ljust(1 << 20, b"\n")
            info = tarfile.TarInfo(f"opt/layer{seed}/file{i:03d}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def build_layout(directory: str) -> int:
    """The 4-layer image as an OCI layout; returns its compressed size in bytes."""
    from runner import busybox

    base = io.BytesIO()
    busybox.build_tarball(busybox.DEFAULT_BUSYBOX, base)
    layers = [base.getvalue()] + [_layer(seed) for seed in (1, 2, 3)]
    os.makedirs(f"{directory}/blobs/sha256", exist_ok=True)

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(f"{directory}/blobs/sha256/{digest}", "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    descriptors, diff_ids, total = [], [], 0
    for layer in layers:
        diff_ids.append("sha256:" + hashlib.sha256(layer).hexdigest())
        compressed = gzip.compress(layer, compresslevel=6, mtime=0)
        total += len(compressed)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(compressed)})
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}  # fmt: skip
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
                "layers": descriptors}  # fmt: skip
    top = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest).encode()),
           "annotations": {"org.opencontainers.image.ref.name": "1"}}  # fmt: skip
    with open(f"{directory}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    with open(f"{directory}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    return total


class Registry:
    """docker-registry on this host's loopback; restart(wipe=True) empties its storage."""

    def __init__(self, name: str, port: int):
        self.dir = f"{WORK}/{name}"
        self.port = port
        os.makedirs(self.dir, exist_ok=True)
        self.config = f"{self.dir}/config.yml"
        with open(self.config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.dir}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n")  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(f"{self.dir}/registry.log", "ab")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 15
        import socket

        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise CommandError(f"docker-registry did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self, wipe: bool) -> None:
        self.stop()
        if wipe:
            shutil.rmtree(f"{self.dir}/storage", ignore_errors=True)
        self.start()


def podman_env_and_argv() -> tuple[dict, list[str]]:
    home = f"{WORK}/podman"
    for sub in ("root", "runroot", "tmp"):
        os.makedirs(f"{home}/{sub}", exist_ok=True)
    with open(f"{home}/containers.conf", "w") as f:
        f.write(f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nevents_logfile_path = "{home}/events.log"\n'
                f'tmp_dir = "{home}/tmp"\nimage_copy_tmp_dir = "{home}/tmp"\n')  # fmt: skip
    with open(f"{home}/storage.conf", "w") as f:
        f.write(f'[storage]\ndriver = "overlay"\nrunroot = "{home}/runroot"\ngraphroot = "{home}/root"\n')
    with open(f"{home}/registries.conf", "w") as f:
        f.write('[[registry]]\nlocation = "localhost:5000"\ninsecure = true\n[[registry]]\nlocation = "localhost:5001"\ninsecure = true\n')
    env = dict(os.environ, CONTAINERS_CONF=f"{home}/containers.conf", CONTAINERS_STORAGE_CONF=f"{home}/storage.conf",
               CONTAINERS_REGISTRIES_CONF=f"{home}/registries.conf")  # fmt: skip
    return env, ["podman", "--root", f"{home}/root", "--runroot", f"{home}/runroot", "--tmpdir", f"{home}/tmp"]


def rounds(operation: str, actions: dict, n: int, warmup: int, prepare: dict | None = None) -> list[Series]:
    """n rounds, one sample of every tool per round; prepare[tool]() runs untimed before each sample."""
    out = measure_rounds(operation, actions, n, warmup, prepare)
    for s in out:
        print(f"measured {s.tool} {operation}: median {s.median:.1f} ms", file=sys.stderr, flush=True)
    return out


def worker(task: dict) -> dict:
    n, warmup = task["n"], task["warmup"]
    os.makedirs(WORK, exist_ok=True)
    private_var(WORK)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = f"{WORK}/pycache"
    os.environ["NETCTL_ROOT"] = f"{WORK}/netctl"
    os.environ["HOME"] = f"{WORK}/home"
    os.makedirs(os.environ["HOME"], exist_ok=True)
    layout = f"{WORK}/layout"
    size = build_layout(layout)
    source, target = Registry("registry", 5000), Registry("target", 5001)
    source.start()
    target.start()
    try:
        run_cmd(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{IMAGE}"])
        netctl = netctl_argv()
        penv, podman = podman_env_and_argv()
        skopeo_dir = f"{WORK}/skopeo-dir"

        def netctl_rm() -> None:
            subprocess.run(netctl + ["image", "rm", "-f", IMAGE], capture_output=True, timeout=120)

        def podman_rm() -> None:
            subprocess.run(podman + ["rmi", "-f", IMAGE], env=penv, capture_output=True, timeout=120)

        def skopeo_rm() -> None:
            shutil.rmtree(skopeo_dir, ignore_errors=True)

        pull = {
            "netctl": lambda: run_cmd(netctl + ["image", "pull", "-q", IMAGE]),
            "podman": lambda: run_cmd(podman + ["pull", "-q", IMAGE], env=penv),
            "skopeo-dir": lambda: run_cmd(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{IMAGE}", f"dir:{skopeo_dir}"]),
        }
        series = rounds("cold", pull, n, warmup, {"netctl": netctl_rm, "podman": podman_rm, "skopeo-dir": skopeo_rm})
        for action in pull.values():  # everything present for the warm pulls and the pushes
            action()
        fast = [sys.executable, "-m", "runner.fastcli", "image", "pull", "-q", IMAGE]
        warm = {"netctl": pull["netctl"], "netctl-fastcli": lambda: run_cmd(fast, env=dict(os.environ, PYTHONPATH=REPO_DIR)),
                "podman": pull["podman"]}  # fmt: skip
        series += rounds("warm", warm, n * 3, warmup)
        target_ref = "localhost:5001/bench/pushed:1"
        push = {
            "netctl": lambda: run_cmd(netctl + ["image", "push", "-q", IMAGE, target_ref]),
            "skopeo": lambda: run_cmd(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"dir:{skopeo_dir}", f"docker://{target_ref}"]),
        }
        wipe = lambda: target.restart(wipe=True)  # noqa: E731
        series += rounds("push", push, n, warmup, {"netctl": wipe, "skopeo": wipe})
    finally:
        source.stop()
        target.stop()
    return {"series": [s.to_dict() for s in series], "extra": {"image_bytes_compressed": size}}


# ---- the driver, outside ----------------------------------------------------------------------------


def main() -> int:
    parser = driver_parser(__doc__, "n=3, no warm-up", "samples per figure (default 10, quick 3; warm pulls 3n)")
    args = parser.parse_args()
    if answer_worker_task(args.worker, worker):
        return 0
    progress = Progress()
    n = args.n or (3 if args.quick else 10)
    task = {"n": n, "warmup": 0 if args.quick else 1}
    before = root_namespace_state()
    progress(f"pull benchmark: n={n}, netctl beside podman and skopeo")
    result = run_worker_in_host("bench-pull", os.path.abspath(__file__), task, TASK_TIMEOUT)
    series = [Series.from_dict(d) for d in result["series"]]
    by = {(s.tool, s.operation): s for s in series}
    rows, comparisons = [], []
    for operation, ours, peers in (("cold", "netctl", ("podman", "skopeo-dir")), ("warm", "netctl", ("podman",)),
                                   ("warm", "netctl-fastcli", ("podman",)), ("push", "netctl", ("skopeo",))):  # fmt: skip
        mine = by[(ours, operation)]
        for peer_name in peers:
            peer = by[(peer_name, operation)]
            ratio = mine.median / peer.median
            comparisons.append({"operation": operation, "tool": ours, "peer": peer_name, "netctl_median_ms": round(mine.median, 1),
                                "peer_median_ms": round(peer.median, 1), "ratio": round(ratio, 3)})  # fmt: skip
            rows.append([operation, ours, fmt_ms(mine.median), fmt_ms(mine.minimum), peer_name, fmt_ms(peer.median),
                         fmt_ms(peer.minimum), f"{ratio:.2f}"])  # fmt: skip
    size = result["extra"]["image_bytes_compressed"]
    print(f"image: 4 layers, {size / 1e6:.1f} MB compressed; medians of {n} (warm: {3 * n}) runs, ms")
    print(format_table(["operation", "tool", "median", "min", "peer", "peer med", "min", "ratio"], rows, numeric=(2, 3, 5, 6, 7)))
    cold = next(c for c in comparisons if c["operation"] == "cold" and c["peer"] == "podman")
    print(f"goal cold pull vs podman: ratio {cold['ratio']:.2f} (goal <= {GOAL_COLD_VS_PODMAN:.2f}): "
          f"{'met' if cold['ratio'] <= GOAL_COLD_VS_PODMAN else 'NOT met'}")  # fmt: skip
    for tool in ("netctl", "netctl-fastcli"):
        warm = by[(tool, "warm")].median
        print(f"goal warm pull ({tool}): {warm:.1f} ms (goal <= {GOAL_WARM_MS:.0f} ms): {'met' if warm <= GOAL_WARM_MS else 'NOT met'}")
    after = root_namespace_state()
    write_comparison("pull", progress, task, series, comparisons, result["extra"], before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
