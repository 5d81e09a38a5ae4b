"""What several benchmarks share: the CPU a number came from, asset paths on the command line,
and documents read the way ``llamaforge eval`` reads them. The benchmarks run as scripts
(``python tools/bench/NAME.py``), so this dir is on ``sys.path`` and they import it as
``common``."""

from __future__ import annotations

from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown CPU" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def asset_path(value: str) -> Path:
    """``asset:NAME`` or ``asset:NAME/REL`` in the asset cache (fetched when missing), else a
    plain path."""
    if value.startswith("asset:"):
        from llamaforge_cli.assets import ensure_asset

        name, _, rel = value.removeprefix("asset:").partition("/")
        return ensure_asset(name) / rel if rel else ensure_asset(name)
    return Path(value)


def read_docs(path: Path, count: int | None = None, first_line: int = 1) -> list[str]:
    """Documents of ``path`` as ``llamaforge eval`` reads them (its non-blank lines, whitespace
    kept), from line ``first_line`` of the file on (1-based), at most ``count``. Raises
    ``OSError`` or ``UnicodeDecodeError`` for a file it cannot read."""
    docs = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines[max(first_line, 1) - 1 :]:
        if line.strip():
            docs.append(line)
            if count is not None and len(docs) == count:
                break
    return docs
