"""Running a jitted per-frame function over a video in batches of one fixed size.

A jitted function compiles once per input shape, so a video of any length is cut into batches of
`size` frames and the last, shorter batch is padded up to `size`: with copies of its last row
(real data, so the padding never holds NaN or an out-of-range frame index) whose results are
dropped. Every stage that renders, fits or scores frames in chunks pads this way.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def pad_to_batch(rows, size: int) -> np.ndarray:
    """[n, ...] (1 <= n <= size) -> [size, ...]: `rows` followed by its last row repeated
    size - n times. Index vectors ([n] frame numbers) are padded the same way."""
    rows = np.asarray(rows)
    n = len(rows)
    if not 1 <= n <= size:
        raise ValueError(f"pad_to_batch: {n} rows do not fit a batch of {size}")
    return np.concatenate([rows, np.repeat(rows[-1:], size - n, axis=0)])


def index_batches(count: int, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(real [n], padded [size]) int64 frame indices of consecutive batches covering
    0 .. count-1 in order: n = size except in the last batch, padded by `pad_to_batch`."""
    if size <= 0:
        raise ValueError(f"index_batches: batch size must be positive, got {size}")
    for start in range(0, count, size):
        real = np.arange(start, min(start + size, count), dtype=np.int64)
        yield real, pad_to_batch(real, size)
