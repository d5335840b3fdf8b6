"""Run a Python snippet in a throwaway network + mount namespace (`unshare`, /run a fresh tmpfs) and
return the JSON of its `result` variable: nothing it creates can reach the machine's own namespaces."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SNIPPET_TIMEOUT = 60  # seconds
_EPILOGUE = (
    "\nimport dataclasses as _dc, json as _json\n"
    "print('@@result@@' + _json.dumps(result, default=lambda o: _dc.asdict(o)))\n"
)


def run_in_throwaway_ns(prelude: str, code: str) -> Any:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    program = prelude + textwrap.dedent(code) + _EPILOGUE
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--kill-child", "--",
            "sh", "-c", 'mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" -c "$1"', sys.executable, program]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SNIPPET_TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"snippet failed (rc {proc.returncode}):\n{proc.stderr}\n{proc.stdout}", pytrace=False)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("@@result@@")]
    return json.loads(marker[-1][len("@@result@@"):])
