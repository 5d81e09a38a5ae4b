"""Results files and the before / after comparison."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from llamaforge_eval.errors import EvalError

FORMAT = "llamaforge-eval-results"


def check_results_path(path: Path) -> Path:
    """Make sure results can be written to ``path`` before an evaluation starts: not a dir, in
    a dir that exists (made here) and is writable.

    Raises:
        EvalError: naming why.
    """
    path = Path(path)
    if path.is_dir():
        raise EvalError(f"{path} is a directory; give a file name for the results (.json)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise EvalError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return path


def write_json(path: Path, body: dict) -> None:
    """Write ``body`` as JSON to ``path``; the file appears whole or not at all."""
    path = check_results_path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` as an eval results file; it appears whole or not at all."""
    write_json(path, {"format": FORMAT, "version": 1, **results})


def read_results(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvalError(f"{path}: cannot read results ({exc})") from None
    if data.get("format") != FORMAT:
        raise EvalError(f"{path}: not a llamaforge eval results file")
    return data


def compare(a: dict, b: dict) -> list[tuple[str, str, float | None, float | None]]:
    """Rows (benchmark, subject or '(all)' or a text metric, value in A, value in B)."""
    rows = []
    for name in sorted(set(a.get("benchmarks", {})) | set(b.get("benchmarks", {}))):
        ba, bb = a.get("benchmarks", {}).get(name, {}), b.get("benchmarks", {}).get(name, {})
        rows.append((name, "(all)", ba.get("accuracy"), bb.get("accuracy")))
        for subj in sorted(set(ba.get("subjects", {})) | set(bb.get("subjects", {}))):
            rows.append(
                (
                    name,
                    subj,
                    ba.get("subjects", {}).get(subj, {}).get("accuracy"),
                    bb.get("subjects", {}).get(subj, {}).get("accuracy"),
                )
            )
    for label in sorted(set(a.get("text", {})) | set(b.get("text", {}))):
        for key in ("bits_per_char", "tokens_per_char"):
            rows.append(
                (
                    f"text:{label}",
                    key,
                    a.get("text", {}).get(label, {}).get(key),
                    b.get("text", {}).get(label, {}).get(key),
                )
            )
    return rows
