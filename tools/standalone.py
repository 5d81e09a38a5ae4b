#!/usr/bin/env python3
"""Install packages alone, each set into a fresh virtualenv, and check that they run there.

    python3 tools/standalone.py                 # every set below
    python3 tools/standalone.py tokenizer       # one set

Each set is installed with pip from local wheels of our packages (``--find-links``) under
``constraints.txt``, sharing pip's cache, so what is checked is what ``pip install`` gives a
user: only the declared dependencies. Then, in that virtualenv:

- every module of each installed llamaforge package imports (a module may fail only on a
  missing optional dependency that the package declares as an extra, e.g. torch for
  ``llamaforge-tokenizer[model]``);
- packages that must be absent are absent (the tokenizer set has no torch, the trainer set no
  umbrella CLI);
- ``python -m <package> --help`` exits 0, and a bad input gives one ``error:`` line on stderr
  with exit code 2;
- a script from ``tools/standalone_work/`` does real work on real assets (from the asset
  cache, fetched if missing) with what the set installed: the tokenizer set learns pieces,
  expands LLaMA-2's tokenizer and measures the compression without torch; the trainer set packs
  text and trains a tiny LLaMA two steps with ``python -m llamaforge_trainer``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Check:
    """One install set: what is installed, what must be missing, which entry points run."""

    install: list[str]
    """Requirements given to pip (resolved against the local wheels and the index)."""
    packages: list[str]
    """Import names whose every module must import."""
    absent: list[str]
    """Import names that must not be importable."""
    bad_input: list[str] = field(default_factory=list)
    """Arguments after ``python -m`` that must fail with one error line and exit code 2."""
    optional: list[str] = field(default_factory=list)
    """Imports that only a declared extra provides: a module may fail on these alone."""
    work: list[str] = field(default_factory=list)
    """A script in ``tools/standalone_work/`` run last, then the assets its arguments are
    (``name`` or ``name/file``); an empty scratch dir is its last argument. It prints one line
    saying what it did and exits non-zero on a wrong result."""


CHECKS = {
    "tokenizer": Check(
        install=["llamaforge-tokenizer"],
        packages=["llamaforge_tokenizer"],
        absent=["torch", "llamaforge_cli", "llamaforge_trainer"],
        bad_input=["llamaforge_tokenizer", "expand", "/nonexistent", "/nonexistent", "-o", "x"],
        optional=["torch"],  # the [model] extra: embedding initialisation
        work=["tokenizer.py", "llama2-tokenizer", "people-daily/heldout.txt"],
    ),
    "trainer": Check(
        install=["llamaforge-trainer"],
        packages=["llamaforge_trainer", "llamaforge_datapack"],
        absent=["llamaforge_cli", "llamaforge_eval", "llamaforge_serve"],
        bad_input=["llamaforge_trainer", "/nonexistent.toml"],
        work=["trainer.py", "smollm2-tokenizer", "people-daily/train.txt"],
    ),
}

PROBE = """
import importlib, importlib.util, pkgutil, sys
packages, absent, optional = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3].split(",")
problems = [f"{name} is installed but must not be" for name in absent
            if importlib.util.find_spec(name) is not None]
count = 0
for name in packages:
    package = importlib.import_module(name)
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        if info.name.endswith(".__main__"):  # runs the CLI: checked below with --help
            continue
        try:
            importlib.import_module(info.name)
            count += 1
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in optional:
                problems.append(f"{info.name}: {exc}")
print(f"imported {count} modules")
if problems:
    print("\\n".join(problems), file=sys.stderr)
    sys.exit(1)
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def _build_wheels(out: Path) -> None:
    for package in sorted((ROOT / "packages").iterdir()):
        if (package / "pyproject.toml").is_file():
            cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
            result = _run([*cmd, str(package)])
            if result.returncode:
                raise SystemExit(f"building {package.name}'s wheel failed:\n{result.stderr}")


def run_check(name: str, check: Check, wheels: Path, work: Path) -> list[str]:
    """Install ``check`` into a new virtualenv under ``work``; returns the problems found."""
    env = work / name
    venv.EnvBuilder(with_pip=True).create(env)
    python = str(env / "bin" / "python")
    start = time.perf_counter()
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    pip += ["-c", str(ROOT / "constraints.txt"), "--find-links", str(wheels)]
    result = _run([*pip, *check.install])
    if result.returncode:
        return [f"pip install {' '.join(check.install)} failed:\n{result.stderr[-3000:]}"]
    print(f"{name}: installed {' '.join(check.install)} in {time.perf_counter() - start:.0f} s")
    problems = []
    probe = _run(
        [
            python,
            "-c",
            PROBE,
            ",".join(check.packages),
            ",".join(check.absent),
            ",".join(check.optional),
        ]
    )
    print(f"{name}: {probe.stdout.strip()}")
    if probe.returncode:
        problems.append(probe.stderr.strip())
    for package in check.packages:
        result = _run([python, "-m", package, "--help"])
        if result.returncode:
            problems.append(
                f"python -m {package} --help: exit {result.returncode}\n{result.stderr}"
            )
    if check.bad_input:
        result = _run([python, "-m", *check.bad_input], cwd=work)
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or not lines or not lines[0].startswith("error:"):
            problems.append(
                f"python -m {' '.join(check.bad_input)}: expected one 'error:' line and exit 2, "
                f"got exit {result.returncode}:\n{result.stderr[-2000:]}"
            )
        else:
            print(f"{name}: bad input → {lines[0]}")
    if check.work:
        problems += _run_work(name, check.work, python, work)
    return problems


def _asset(spec: str) -> Path:
    """``name`` or ``name/file`` from the asset cache, fetched if missing (this script runs in
    the workspace environment, which has the umbrella's asset code)."""
    from llamaforge_cli.assets import ensure_asset

    name, _, inner = spec.partition("/")
    return ensure_asset(name) / inner if inner else ensure_asset(name)


def _run_work(name: str, work: list[str], python: str, tmp: Path) -> list[str]:
    script, *assets = work
    scratch = tmp / f"{name}-work"
    scratch.mkdir()
    cmd = [python, str(ROOT / "tools" / "standalone_work" / script)]
    start = time.perf_counter()
    result = _run([*cmd, *(str(_asset(spec)) for spec in assets), str(scratch)], cwd=scratch)
    if result.returncode:
        return [f"{script} failed (exit {result.returncode}):\n{result.stderr[-3000:]}"]
    said = result.stdout.strip().splitlines()[-1]
    print(f"{name}: {said} ({time.perf_counter() - start:.0f} s)")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help=f"some of: {', '.join(CHECKS)} (default: all)")
    chosen = parser.parse_args(argv).sets or list(CHECKS)
    unknown = [name for name in chosen if name not in CHECKS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    with tempfile.TemporaryDirectory(prefix="llamaforge-standalone-") as tmp:
        wheels = Path(tmp) / "wheels"
        _build_wheels(wheels)
        problems = {name: run_check(name, CHECKS[name], wheels, Path(tmp)) for name in chosen}
    failed = {name: p for name, p in problems.items() if p}
    for name, found in failed.items():
        print(f"standalone {name}: FAILED\n  " + "\n  ".join(found), file=sys.stderr)
    if not failed:
        print(f"standalone: {', '.join(chosen)} install and run alone")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
