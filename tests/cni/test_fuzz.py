"""Fuzzing the plugins with hypothesis: >= 500 generated malformed or hostile configurations and
environments, never a traceback, always a spec error on stdout, nothing left in the kernel or the store.
The generator and the properties are in fuzz_inside.py, which runs inside the throwaway host (the
plugins act on the namespace they run in, so an in-process fuzz must not run in the machine's)."""

from __future__ import annotations

import json
import os
import sys

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(600)]

FUZZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_inside.py")
EXAMPLES = int(os.environ.get("NETCTL_CNI_FUZZ_EXAMPLES", "520"))


def test_hostile_input_never_breaks_the_protocol_or_leaves_state(cni):
    pytest.importorskip("hypothesis")
    done = cni.host.run(sys.executable, FUZZER, "--examples", str(EXAMPLES), "--plugin-dir", cni.plugin_dir,
                        check=False, timeout=540, env={"HYPOTHESIS_STORAGE_DIRECTORY": "/run/hypothesis"})
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["examples"] >= 500
    assert summary["outcomes"].get("subprocess", 0) >= 20  # the real executables, not only skel.run
    assert sum(n for k, n in summary["outcomes"].items() if k.startswith("error")) > summary["examples"] // 2
