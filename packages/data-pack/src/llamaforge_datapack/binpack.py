"""Best-fit-decreasing bin packing of segment lengths into rows of a fixed capacity."""

from __future__ import annotations

from bisect import bisect_left, insort

import numpy as np


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Group item indices into bins whose lengths sum to at most ``capacity``.

    Items are placed longest first, each into the open bin with the least room that still fits
    it. Open bins are kept by remaining room (at most ``capacity`` distinct values), so a
    placement costs O(log capacity) and the whole packing O(n log n). Ties break by index, so
    the result is deterministic.

    Raises:
        ValueError: an item is longer than ``capacity``.
    """
    lengths = np.asarray(lengths)
    if lengths.size and int(lengths.max()) > capacity:
        raise ValueError(f"an item of length {int(lengths.max())} exceeds capacity {capacity}")
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    room_keys: list[int] = []  # sorted distinct remaining-room values with open bins
    by_room: dict[int, list[int]] = {}
    for idx in order.tolist():
        need = int(lengths[idx])
        k = bisect_left(room_keys, need)
        if k < len(room_keys):
            room = room_keys[k]
            stack = by_room[room]
            b = stack.pop()
            if not stack:
                room_keys.pop(k)
                del by_room[room]
        else:
            b, room = len(bins), capacity
            bins.append([])
        bins[b].append(idx)
        left = room - need
        if left > 0:
            if left not in by_room:
                insort(room_keys, left)
                by_room[left] = []
            by_room[left].append(b)
    return bins


def split_lengths(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut documents longer than ``capacity`` into chunks; vectorised.

    Returns (piece document index, piece start within its document, piece length).
    """
    lengths = np.asarray(lengths, np.int64)
    counts = np.maximum(1, -(-lengths // capacity))
    doc = np.repeat(np.arange(len(lengths)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = (np.arange(len(doc)) - first) * capacity
    return doc, start, np.minimum(capacity, lengths[doc] - start)


def gather_rows(
    values: np.ndarray, sources: np.ndarray, lengths: np.ndarray, bins: list[list[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Copy pieces ``(sources[i], lengths[i])`` of flat ``values`` into rows, in one gather.

    Returns the rows' tokens, flat, and the row offsets into it (``len(bins) + 1`` entries).
    """
    order = np.fromiter((i for b in bins for i in b), np.int64)
    piece_len = lengths[order]
    out_start = np.cumsum(piece_len) - piece_len
    index = np.repeat(sources[order] - out_start, piece_len) + np.arange(int(piece_len.sum()))
    row_len = np.fromiter((sum(int(lengths[i]) for i in b) for b in bins), np.int64, len(bins))
    return values[index], np.concatenate([[0], np.cumsum(row_len)])
