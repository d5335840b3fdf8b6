"""ruff and mypy over the product packages, as configured in pyproject.toml ([tool.ruff], [tool.mypy]):
the test command (scripts/test.sh, CI) runs them, so a finding fails the suite like a failing test.

Both run as subprocesses of this interpreter (the venv's, where the test extra installs them), from the
repository's root so they read pyproject.toml. Each test fails with the tool's own report.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("libnetwork", "drivers", "runner", "cni_plugins", "netctl")
TIMEOUT_S = 600  # mypy's first run without a cache takes ~30 s on a busy 2-CPU machine


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(tool) is None:
        pytest.fail(f"{tool} is not installed: `pip install -e '.[test]'` (scripts/bootstrap.sh does)")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)  # fmt: skip


def test_ruff():
    done = _run("ruff", "check", "--no-cache", "--output-format", "concise", *PRODUCT_PACKAGES)
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"


def test_mypy(tmp_path):
    # A cache of its own per run: parallel runs (pytest -n, other engineers' suites) never share one.
    done = _run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"), *PRODUCT_PACKAGES)
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout}{done.stderr}"
