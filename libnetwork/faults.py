"""Fault injection for the crash-safety tests: named points where a process can be made to stop."""

from __future__ import annotations

import os


def checkpoint(name: str) -> None:
    """Fault-injection point for crash-safety tests, like the CNI plugins' debugPostIPAMError hook:
    NETCTL_TEST_PAUSE=<name> makes the process stop here (bounded: 60 s) so a test can kill -9 it at a
    known step. Costs one environment lookup otherwise."""
    if os.environ.get("NETCTL_TEST_PAUSE") == name:
        import sys
        import time

        # sys.__stderr__: in the agent, sys.stderr is the request's captured output until it ends.
        print(f"paused at {name}", file=sys.__stderr__, flush=True)
        time.sleep(60)
