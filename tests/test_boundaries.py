"""Package boundaries and declared dependencies, as contracts (CI runs these with the suite).

- import-linter (``.importlinter``): the tokenizer imports no other part; nothing imports the
  umbrella; data-pack, eval and serve never import the trainer; eval and serve are
  independent; only a package's ``__init__`` is imported across a boundary.
- deptry, per package: every import is declared (as a dependency or an extra) and every
  declared dependency is imported, but for the exceptions each pyproject states with a reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed in this environment (hatch env 'default' has it)")
    return found


def test_import_contracts_are_kept():
    result = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_declared_dependencies_match_imports(package):
    result = subprocess.run(
        [_tool("deptry"), "src"], cwd=ROOT / "packages" / package, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
