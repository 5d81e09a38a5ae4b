#!/usr/bin/env python3
"""Re-resolve the workspace's dependency set and write constraints.txt.

Creates a throw-away virtualenv, installs every workspace package (with its extras) plus the test
tools with pip and no constraints, and records ``pip freeze`` minus the workspace packages.
Run it after changing a package's dependencies, then commit constraints.txt.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["cli[model]", "tokenizer-expand[model]", "data-pack", "trainer", "eval", "serve"]
TOOLS = [
    "pytest>=8",
    "pytest-xdist==3.8.0",
    "ruff==0.17.6",
    "deptry==0.25.1",
    "import-linter==2.16",
]
HEADER = """\
# The one dependency set of the llamaforge workspace (Python 3.11, x86_64 Linux), resolved by
# pip from colossalai==0.5.0's pins plus every package's own requirements.
# Regenerate with: python3 tools/lock.py
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        venv.EnvBuilder(with_pip=True).create(tmp)
        python = str(Path(tmp) / "bin" / "python")
        specs = [
            f"{ROOT / 'packages' / p.split('[')[0]}" + (p[p.index("[") :] if "[" in p else "")
            for p in PACKAGES
        ]
        subprocess.run([python, "-m", "pip", "install", "--quiet", *specs, *TOOLS], check=True)
        frozen = subprocess.run(
            [python, "-m", "pip", "freeze", "--exclude-editable"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    keep = sorted(
        (line for line in frozen if not line.lower().startswith("llamaforge")), key=str.lower
    )
    (ROOT / "constraints.txt").write_text(HEADER + "\n".join(keep) + "\n", encoding="utf-8")
    print(f"constraints.txt: {len(keep)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
