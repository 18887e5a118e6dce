"""The subject's own frames as the background of a new video, in ping-pong order, streamed.

Output frame k shows source frame pingpong(k): the target video forward, then backward, and so
on (no jump from the last frame to the first when the audio is longer than the video). Forward
runs are one decoder stream; backward runs are decoded in blocks of `block` frames (each block
read forward from a seek, then handed out in reverse), so at most one block of frames (8 4K
frames = 200 MB, as inference uses it) is ever held, whatever the video's length.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.media.video_read import pingpong_indices, read_frames


def monotonic_runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last), ...]: the maximal runs of `indices` that step by +1 or -1 (a run of one
    element has first == last). Concatenating range(first, last +- 1) over the runs gives back
    `indices`."""
    runs = []
    start = 0
    for i in range(1, len(indices) + 1):
        if i < len(indices):
            step = int(indices[i]) - int(indices[i - 1])
            direction = int(indices[start + 1]) - int(indices[start]) if i - 1 > start else step
            if abs(step) == 1 and step == direction:
                continue
        runs.append((int(indices[start]), int(indices[i - 1])))
        start = i
    return runs


class BackgroundFrames:
    """Yields (source index, [H, W, 3] uint8 frame) for output frames 0..count-1.

    video: the subject's source video; fps: the subject's frame rate (frames are resampled as
    `prepare` read them); num_source: the subject's frame count; decoder_threads: ffmpeg's
    (None: its choice).
    """

    def __init__(self, video: str, fps: float, num_source: int, *, block: int = 16,
                 decoder_threads: int | None = None):
        if num_source <= 0:
            raise InputError(f"{video}: the subject has no frames")
        self.video, self.fps, self.num_source = video, float(fps), int(num_source)
        self.block = max(1, int(block))
        self.decoder_threads = decoder_threads

    def indices(self, count: int) -> np.ndarray:
        """[count] int64 source frame of each output frame."""
        return pingpong_indices(int(count), self.num_source)

    def _frames(self, first: int, count: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) of frames first .. first+count-1, decoded from a seek to `first`."""
        index = first
        for frame in read_frames(self.video, fps=self.fps, max_frames=count, start_frame=first,
                                 threads=self.decoder_threads):
            yield index, frame
            index += 1
        if index < first + count:
            raise InputError(f"{self.video}: the video ends at frame {index}; the subject has "
                             f"{self.num_source} frames (is it the video the subject was "
                             "prepared from?)")

    def __call__(self, count: int) -> Iterator[tuple[int, np.ndarray]]:
        for first, last in monotonic_runs(self.indices(count)):
            if last >= first:
                yield from self._frames(first, last - first + 1)
                continue
            hi = first
            while hi >= last:
                lo = max(last, hi - self.block + 1)
                block = list(self._frames(lo, hi - lo + 1))
                yield from reversed(block)
                del block
                hi = lo - 1

    def endless(self) -> Iterator[tuple[int, np.ndarray]]:
        """(source index, frame) of output frames 0, 1, 2, ... for as long as they are pulled
        (a live stream, whose length is not known): the same frames as __call__, ping-pong."""
        n = self.num_source
        if n == 1:
            frame = next(self._frames(0, 1))
            while True:
                yield frame
        yield from self._frames(0, n)                       # forward: 0 .. n-1
        while True:
            hi = n - 2                                      # backward: n-2 .. 0, in blocks
            while hi >= 0:
                lo = max(0, hi - self.block + 1)
                block = list(self._frames(lo, hi - lo + 1))
                yield from reversed(block)
                del block
                hi = lo - 1
            yield from self._frames(1, n - 1)              # forward again: 1 .. n-1

