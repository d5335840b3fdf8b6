"""GET /containers/{id}/stats (one-shot and streamed, Docker's JSON: cpu_stats/precpu_stats,
memory_stats, pids_stats, networks) from the container's cgroup and its network namespace's counters
(runner/cgroup_stats.py), and GET /containers/{id}/top (the processes of its cgroup, `ps -ef` columns,
read from /proc).
"""

from __future__ import annotations

import os
import pwd
import time
from datetime import datetime, timezone

from netctl.docker_api.containers_common import find
from netctl.docker_api.http import Json, Request, Stream, bad_request, conflict, json_line
from netctl.docker_api.system import mem_total

INTERVAL_S = 1.0  # dockerd's collection interval
NEVER = "0001-01-01T00:00:00Z"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def _cgroup(container):
    from runner.cgroups import Cgroup, Hierarchy

    config = container.config
    if not (config.cgroup_path and config.cgroup):
        return None
    return Cgroup(Hierarchy.from_dict(config.cgroup), config.cgroup_path)


def sample(container) -> dict:
    """One reading: cpu_stats, memory_stats, pids_stats, networks (zeros when not running)."""
    from runner import cgroup_stats
    from runner.state import is_alive

    running = container.state.status == "running" and is_alive(container.state)
    cgroup = _cgroup(container) if running else None
    usage = cgroup_stats.usage(cgroup) if cgroup is not None else {}
    online = os.cpu_count() or 1
    cpu = {
        "cpu_usage": {"total_usage": usage.get("cpu_total", 0), "percpu_usage": usage.get("percpu") or None,
                      "usage_in_kernelmode": usage.get("cpu_system", 0), "usage_in_usermode": usage.get("cpu_user", 0)},
        "system_cpu_usage": cgroup_stats.system_cpu_ns() if running else 0,
        "online_cpus": online if running else 0,
        "throttling_data": usage.get("throttling") or {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }  # fmt: skip
    memory = {}
    if running:
        memory = {"usage": usage.get("memory_usage", 0), "max_usage": usage.get("memory_max_usage", 0),
                  "stats": usage.get("memory_stat", {}),
                  "limit": usage.get("memory_limit") or mem_total()}  # fmt: skip
    pids = {"current": usage.get("pids_current", 0)} if running else {}
    if usage.get("pids_limit"):
        pids["limit"] = usage["pids_limit"]
    reading = {
        "read": _now() if running else NEVER,
        "pids_stats": pids,
        "blkio_stats": {"io_service_bytes_recursive": None, "io_serviced_recursive": None,
                        "io_queue_recursive": None, "io_service_time_recursive": None,
                        "io_wait_time_recursive": None, "io_merged_recursive": None,
                        "io_time_recursive": None, "sectors_recursive": None},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu,
        "memory_stats": memory,
        "name": "/" + container.config.name,
        "id": container.id,
    }  # fmt: skip
    if running and container.config.network_mode != "host":
        reading["networks"] = cgroup_stats.interfaces(container.state.pid)
    return reading


def _empty_cpu() -> dict:
    return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}  # fmt: skip


def stats(api, req: Request, ref: str) -> Json | Stream:
    from runner.state import Records

    container = find(api, ref)
    stream = req.flag("stream", True)
    one_shot = req.flag("one-shot")
    if one_shot and stream:
        raise bad_request("one-shot is only valid with stream=false")
    if not stream:
        first = sample(container)
        if one_shot or container.state.status != "running":
            return Json({**first, "preread": NEVER, "precpu_stats": _empty_cpu()})
        time.sleep(INTERVAL_S / 2)  # CPU % needs two readings: dockerd's non-streamed reply has both
        second = sample(container)
        return Json({**second, "preread": first["read"], "precpu_stats": first["cpu_stats"]})
    records = Records(api.layout)

    def chunks():
        previous = {"read": NEVER, "cpu_stats": _empty_cpu()}
        for _ in range(10**9):  # bounded: ends with the container, the client or the agent
            current = records.load(container.id)
            if current is None or api.stopping.is_set():
                return
            reading = sample(current)
            yield json_line({**reading, "preread": previous["read"], "precpu_stats": previous["cpu_stats"]})
            previous = reading
            if current.state.status not in ("running", "restarting"):
                return
            for _ in range(10):
                if req.client_gone() or api.stopping.wait(INTERVAL_S / 10):
                    return

    return Stream(chunks())


def top(api, req: Request, ref: str) -> Json:
    container = find(api, ref)
    if container.state.status != "running":
        raise conflict(f"Container {container.id} is not running")
    ps_args = req.arg("ps_args") or "-ef"
    if ps_args != "-ef":
        raise bad_request(f"ps_args {ps_args!r} is not supported by netctl: top shows `ps -ef` columns")
    cgroup = _cgroup(container)
    pids = cgroup.pids() if cgroup is not None else [container.state.pid]
    return Json({"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
                 "Processes": [row for row in (_ps_row(pid) for pid in pids) if row]})


def _ps_row(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_seconds = (int(fields[11]) + int(fields[12])) // ticks
    try:
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        started = time.time() - uptime + int(fields[19]) / ticks
    except (OSError, ValueError):
        started = time.time()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return [user, str(pid), fields[1], "0", time.strftime("%H:%M", time.localtime(started)), "?",
            time.strftime("%H:%M:%S", time.gmtime(cpu_seconds)), cmdline or f"[{name}]"]  # fmt: skip
