"""What every results file in ``benchmarks/results`` records about where it was made."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sh(cmd: str) -> str:
    """A shell command's stdout, stripped, run at the repository root ("" if it fails)."""
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=REPO,
                              timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_model() -> str:
    """The CPU's model name from ``lscpu`` (or ``platform.processor()`` without it)."""
    return sh("lscpu | grep 'Model name'").split(":", 1)[-1].strip() or platform.processor()
