"""Token spill files: tokenised documents on disk, so packing memory does not grow with data.

Token ids and labels are appended to two flat int32 files; only each document's offset, length
and category stay in memory. Reading back maps the files (no copy until a row is built).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Spill:
    folder: Path
    offsets: list[int] = field(default_factory=list)
    _tokens: object = None
    _labels: object = None
    _pos: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tokens = (self.folder / "tokens.bin").open("wb")
        self._labels = (self.folder / "labels.bin").open("wb")

    def add(self, input_ids: np.ndarray, labels: np.ndarray) -> int:
        """Append one document; return its index."""
        self._tokens.write(np.ascontiguousarray(input_ids, np.int32).tobytes())
        self._labels.write(np.ascontiguousarray(labels, np.int32).tobytes())
        self.offsets.append(self._pos)
        self._pos += len(input_ids)
        return len(self.offsets) - 1

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        """Finish writing; return memory maps of (tokens, labels)."""
        self._tokens.close()
        self._labels.close()
        if self._pos == 0:
            empty = np.zeros(0, np.int32)
            return empty, empty
        tokens = np.memmap(self.folder / "tokens.bin", np.int32, "r", shape=(self._pos,))
        labels = np.memmap(self.folder / "labels.bin", np.int32, "r", shape=(self._pos,))
        return tokens, labels
