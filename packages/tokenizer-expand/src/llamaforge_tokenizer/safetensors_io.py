"""Minimal streaming safetensors reader / writer (no torch needed to copy tensors).

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to dtype, shape and byte offsets, then the raw bytes. Copying the tensors that don't change
is a byte copy; only the embedding matrices are decoded. This keeps memory to the matrices that
change, whatever the size of the model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from llamaforge_tokenizer.errors import TokenizerExpandError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int  # byte offsets relative to the data section

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict, int]:
    """Tensor infos, the ``__metadata__`` dict and the data section's offset."""
    with Path(path).open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise TokenizerExpandError(f"{path}: not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise TokenizerExpandError(f"{path}: corrupt safetensors header") from None
    meta = header.pop("__metadata__", {}) or {}
    infos = {}
    for name, h in header.items():
        start, end = h["data_offsets"]
        infos[name] = TensorInfo(name, h["dtype"], tuple(h["shape"]), start, end)
    return infos, meta, 8 + size


@dataclass
class Pending:
    """A tensor to write: raw bytes from a source file range, or a buffer made on demand.

    ``make`` is called only when the writer reaches the tensor, and its result is dropped right
    after, so at most one new tensor is alive at a time.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source: tuple[Path, int] | None = None  # (file, absolute offset)
    make: Callable[[], object] | None = None  # returns a bytes-like object of nbytes


def write_file(path: Path, tensors: Iterable[Pending], metadata: dict | None = None) -> None:
    """Write ``tensors`` in order; raw-range tensors are copied in 16 MiB blocks."""
    tensors = list(tensors)
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with Path(path).open("wb") as out:
        out.write(struct.pack("<Q", len(blob)))
        out.write(blob)
        for t in tensors:
            if t.make is not None:
                data = t.make()
                if memoryview(data).nbytes != t.nbytes:
                    raise TokenizerExpandError(
                        f"{t.name}: made {memoryview(data).nbytes} bytes, header says {t.nbytes}"
                    )
                out.write(data)
                del data
            else:
                src, start = t.source
                with src.open("rb") as fh:
                    fh.seek(start)
                    _copy_range(fh, out, t.nbytes)


def _copy_range(src: BinaryIO, dst: BinaryIO, n: int) -> None:
    block = 16 << 20
    while n > 0:
        chunk = src.read(min(block, n))
        if not chunk:
            raise TokenizerExpandError("safetensors file ended early (truncated?)")
        dst.write(chunk)
        n -= len(chunk)
