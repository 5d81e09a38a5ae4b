"""tools/bootstrap.py says, in one line and before installing anything, when the disk cannot
hold the environment a job would build."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "bootstrap.py"


@pytest.fixture
def bootstrap(tmp_path, monkeypatch):
    """The script as a module, its workspace root moved to an empty dir."""
    spec = importlib.util.spec_from_file_location("bootstrap_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "TOOLS", tmp_path / ".tools" / "hatch")
    return module


def free_gib(path: Path) -> float:
    return shutil.disk_usage(path).free / 1024**3


def test_a_job_stops_with_one_line_when_its_env_cannot_fit(bootstrap, tmp_path, capsys):
    bootstrap.ENV_PEAK_GIB = {".venv": free_gib(tmp_path) + 50, ".venv-vllm": 0.1}
    assert bootstrap.main(["test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("bootstrap: test needs about ") and str(tmp_path) in err[0]
    assert not (tmp_path / ".tools").exists()  # nothing was installed first


def test_an_env_that_exists_costs_nothing_more(bootstrap, tmp_path):
    bootstrap.ENV_PEAK_GIB = {".venv": free_gib(tmp_path) + 50, ".venv-vllm": 0.1}
    (tmp_path / ".venv").mkdir()
    assert bootstrap.disk_shortfall("test") is None
    assert bootstrap.disk_shortfall("lint") is None  # lint builds no big env
    assert bootstrap.disk_shortfall("test-vllm") is None  # 0.1 GiB fits


def test_check_counts_its_own_virtualenv_on_the_temp_disk(bootstrap, tmp_path, monkeypatch):
    (tmp_path / ".venv").mkdir()
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(bootstrap.tempfile, "tempdir", None)  # read TMPDIR again
    bootstrap.CHECK_VENV_GIB = free_gib(temp) + 50
    line = bootstrap.disk_shortfall("check")
    assert line is not None and str(temp) in line
    bootstrap.CHECK_VENV_GIB = 0.1
    assert bootstrap.disk_shortfall("check") is None


def test_needs_on_one_disk_add_up(bootstrap, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(bootstrap.tempfile, "tempdir", None)
    half = free_gib(tmp_path) * 0.6  # each fits alone; both do not
    bootstrap.ENV_PEAK_GIB = {".venv": half, ".venv-vllm": 0.1}
    bootstrap.CHECK_VENV_GIB = half
    assert bootstrap.disk_shortfall("test") is None
    line = bootstrap.disk_shortfall("check")
    assert line is not None and f"{2 * half:.1f} GiB" in line
