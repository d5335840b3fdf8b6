"""What a container's cgroup has counted (CPU time, memory, processes) and what its network namespace
has (interface counters), read from the kernel's files for `docker stats` (netctl/docker_api/
containers_stats.py). cgroup v1 and v2; a file that is missing reads as 0.
"""

from __future__ import annotations

import os

from runner.cgroups import Cgroup

USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NO_LIMIT = 1 << 62  # v1 reports "no memory limit" as a page-rounded 2^63 - 1


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(text: str, default: int = 0) -> int:
    text = text.strip()
    if text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def _pairs(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def usage(cgroup: Cgroup) -> dict:
    """{cpu_total, cpu_user, cpu_system (ns), percpu [ns], throttling {periods, throttled_periods,
    throttled_time}, memory_usage, memory_max_usage, memory_limit (0: none), memory_stat {},
    pids_current, pids_limit (0: none)}."""
    if cgroup.hierarchy.version == 2:
        return _usage_v2(cgroup.directory("memory") or "")
    cpu = cgroup.directory("cpuacct") or cgroup.directory("cpu") or ""
    memory = cgroup.directory("memory") or ""
    pids = cgroup.directory("pids") or ""
    ticks = _pairs(_read(os.path.join(cpu, "cpuacct.stat")))
    throttle = _pairs(_read(os.path.join(cgroup.directory("cpu") or "", "cpu.stat")))
    limit = _int(_read(os.path.join(memory, "memory.limit_in_bytes")))
    return {
        "cpu_total": _int(_read(os.path.join(cpu, "cpuacct.usage"))),
        "cpu_user": ticks.get("user", 0) * 1_000_000_000 // USER_HZ,
        "cpu_system": ticks.get("system", 0) * 1_000_000_000 // USER_HZ,
        "percpu": [int(v) for v in _read(os.path.join(cpu, "cpuacct.usage_percpu")).split()],
        "throttling": {"periods": throttle.get("nr_periods", 0), "throttled_periods": throttle.get("nr_throttled", 0),
                       "throttled_time": throttle.get("throttled_time", 0)},
        "memory_usage": _int(_read(os.path.join(memory, "memory.usage_in_bytes"))),
        "memory_max_usage": _int(_read(os.path.join(memory, "memory.max_usage_in_bytes"))),
        "memory_limit": 0 if limit >= NO_LIMIT else limit,
        "memory_stat": _pairs(_read(os.path.join(memory, "memory.stat"))),
        "pids_current": _int(_read(os.path.join(pids, "pids.current"))),
        "pids_limit": _int(_read(os.path.join(pids, "pids.max"))),
    }  # fmt: skip


def _usage_v2(directory: str) -> dict:
    cpu = _pairs(_read(os.path.join(directory, "cpu.stat")))
    return {
        "cpu_total": cpu.get("usage_usec", 0) * 1000,
        "cpu_user": cpu.get("user_usec", 0) * 1000,
        "cpu_system": cpu.get("system_usec", 0) * 1000,
        "percpu": [],
        "throttling": {"periods": cpu.get("nr_periods", 0), "throttled_periods": cpu.get("nr_throttled", 0),
                       "throttled_time": cpu.get("throttled_usec", 0) * 1000},
        "memory_usage": _int(_read(os.path.join(directory, "memory.current"))),
        "memory_max_usage": _int(_read(os.path.join(directory, "memory.peak"))),
        "memory_limit": _int(_read(os.path.join(directory, "memory.max"))),
        "memory_stat": _pairs(_read(os.path.join(directory, "memory.stat"))),
        "pids_current": _int(_read(os.path.join(directory, "pids.current"))),
        "pids_limit": _int(_read(os.path.join(directory, "pids.max"))),
    }  # fmt: skip


def system_cpu_ns() -> int:
    """The machine's CPU time (all CPUs, all states) since boot: /proc/stat's first line, in ns."""
    fields = _read("/proc/stat").split("\n", 1)[0].split()[1:8]
    return sum(int(v) for v in fields) * 1_000_000_000 // USER_HZ


def interfaces(pid: int) -> dict[str, dict[str, int]]:
    """Counters of the interfaces in process `pid`'s network namespace (/proc/PID/net/dev), but lo."""
    names = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", None, None, None, None,
             "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")  # fmt: skip
    out = {}
    for line in _read(f"/proc/{pid}/net/dev").splitlines()[2:]:
        name, _, values = line.partition(":")
        name = name.strip()
        if not name or name == "lo":
            continue
        numbers = values.split()
        out[name] = {key: int(numbers[i]) for i, key in enumerate(names) if key and i < len(numbers)}
    return out
