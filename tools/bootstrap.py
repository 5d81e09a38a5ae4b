#!/usr/bin/env python3
"""One command from a bare Python: set up the workspace with hatch, then run a job in it.

    python3 tools/bootstrap.py demo      # = hatch run demo:run   (the main job)
    python3 tools/bootstrap.py test      # = hatch run test:all   (the whole test suite)
    python3 tools/bootstrap.py test-vllm # = hatch run vllm:test  (vLLM backends, own venv)
    python3 tools/bootstrap.py lint      # = hatch run lint:check
    python3 tools/bootstrap.py check     # = hatch run test:check  (each package alone)
    python3 tools/bootstrap.py hatch ... # any hatch command with the pinned hatch

Only the standard library is used here. Hatch itself (pinned) goes into .tools/hatch, a private
virtualenv, so nothing is installed into the Python that runs this script.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HATCH_VERSION = "1.18.2"
TOOLS = ROOT / ".tools" / "hatch"
JOBS = {
    "demo": "demo:run",
    "test": "test:all",
    "test-fast": "test:fast",
    "test-vllm": "vllm:test",
    "lint": "lint:check",
    "check": "test:check",
}


def _hatch() -> Path:
    exe = TOOLS / ("Scripts/hatch.exe" if os.name == "nt" else "bin/hatch")
    marker = TOOLS / f".hatch-{HATCH_VERSION}"
    if exe.exists() and marker.exists():
        return exe
    print(f"bootstrap: installing hatch {HATCH_VERSION} into {TOOLS.relative_to(ROOT)}", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(TOOLS)
    python = TOOLS / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"hatch=={HATCH_VERSION}",
        ],
        check=True,
    )
    marker.touch()
    return exe


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    hatch = _hatch()
    if job == "hatch":
        cmd = [str(hatch), *rest]
    elif job in JOBS:
        cmd = [str(hatch), "run", JOBS[job], *rest]
    else:
        print(
            f"bootstrap: unknown job {job!r}; choose one of {', '.join([*JOBS, 'hatch'])}",
            file=sys.stderr,
        )
        return 2
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
