"""Run a snippet in a fresh interpreter: what a module imports (or touches) at import time only
shows in a process that has not imported it yet."""

from __future__ import annotations

import subprocess
import sys


def assert_python_succeeds(code: str, *, timeout: float) -> None:
    """Run `code` with `python -c` in a new process; fail with its stderr unless it exits 0."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
