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
import shutil
import subprocess
import sys
import tempfile
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
GIB = 1024**3
# Peak disk use while an environment is built, in GiB, measured with `df` (pip unpacks torch's
# wheels beside what it installs): the workspace env .venv 9.1 (5.7 once built), .venv-vllm 4.1
# (3.5), the trainer's own virtualenv that `check` builds under the temp dir 9.6 (removed after).
# A fresh clone's CI run (.ci/run: test, lint, check, test-vllm) peaked at 16.0 GiB.
ENV_PEAK_GIB = {".venv": 9.5, ".venv-vllm": 4.5}
ENVS = {
    "demo": ".venv",
    "test": ".venv",
    "test-fast": ".venv",
    "test-vllm": ".venv-vllm",
    "check": ".venv",
}
CHECK_VENV_GIB = 10.0


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


def disk_shortfall(job: str) -> str | None:
    """One line saying where ``job`` would run out of disk, or None. Only what the job has
    still to build counts (an environment that exists costs nothing more), summed over what
    lands on one filesystem."""
    needs: list[tuple[Path, float]] = []
    env = ENVS.get(job)
    if env and not (ROOT / env).is_dir():
        needs.append((ROOT, ENV_PEAK_GIB[env]))
    if job == "check":
        needs.append((Path(tempfile.gettempdir()), CHECK_VENV_GIB))
    by_disk: dict[int, tuple[list[Path], float]] = {}
    for where, gib in needs:
        disk = where.stat().st_dev
        paths, total = by_disk.get(disk, ([], 0.0))
        by_disk[disk] = ([*paths, where], total + gib)
    for paths, gib in by_disk.values():
        free = shutil.disk_usage(paths[0]).free / GIB
        if free < gib:
            return (
                f"bootstrap: {job} needs about {gib:.1f} GiB free on the disk of "
                f"{' and '.join(map(str, paths))} (what it installs there); {free:.1f} GiB is free"
            )
    return None


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    job, rest = argv[0], argv[1:]
    short = disk_shortfall(job)
    if short:
        print(short, file=sys.stderr)
        return 2
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
