"""Where a command may write: output dirs built in a temporary sibling and renamed into place,
and replaced only when this package made them.

Every output dir gets a ``.llamaforge-output`` marker. ``--overwrite`` replaces an existing dir
only when it carries that marker (or is empty); it never replaces ``/``, the home dir, the
current dir or one of its parents, a dir holding an input, a file or a symlink.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError

MARKER = ".llamaforge-output"


def check_output_dir(
    out_dir: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()
) -> None:
    """Refuse an output dir this package may not write, before any work is done.

    Raises:
        TokenizerExpandError: naming why, and what to do instead.
    """
    out_dir = Path(out_dir)
    target = out_dir.resolve()
    protected = {Path("/").resolve(), Path.home().resolve()}
    if target in protected or target in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise TokenizerExpandError(
            f"{out_dir}: refusing to write the output into {target}; give a new dir"
        )
    for path in inputs:
        resolved = Path(path).resolve()
        if resolved == target or target in resolved.parents:
            raise TokenizerExpandError(f"{out_dir}: it holds the input {path}; give a new dir")
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        kind = "a symlink" if out_dir.is_symlink() else "a file"
        raise TokenizerExpandError(f"{out_dir} is {kind}, not an output dir; give a new dir")
    if not out_dir.exists():
        return
    if not overwrite:
        raise TokenizerExpandError(f"{out_dir} already exists; pass --overwrite to replace it")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise TokenizerExpandError(
            f"{out_dir} was not written by llamaforge-tokenizer (no {MARKER}); --overwrite "
            "replaces only its own output dirs: remove it yourself or give a new dir"
        )


@contextmanager
def atomic_output_dir(
    out_dir: Path, *, overwrite: bool = False, inputs: Iterable[Path] = (), kind: str = ""
) -> Iterator[Path]:
    """Yield a temporary dir that becomes ``out_dir`` (with the marker) when the block
    succeeds; see :func:`check_output_dir` for what is refused."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite=overwrite, inputs=inputs)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"package": "llamaforge-tokenizer", "kind": kind}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(path: Path, *, inputs: Iterable[Path] = ()) -> Path:
    """Make sure ``path`` can be written as a file before the work that produces it: not a
    dir, not one of the inputs, in a dir that exists (made here) and is writable.

    Raises:
        TokenizerExpandError: naming why.
    """
    path = Path(path)
    if path.is_dir():
        raise TokenizerExpandError(f"{path} is a directory; give a file name")
    for item in inputs:
        if Path(item).resolve() == path.resolve():
            raise TokenizerExpandError(f"{path} is an input; give another output file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise TokenizerExpandError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    return path
