"""The one windowed input pipeline of the A2E and the renderer: W-frame windows over stored frames,
and this process's batches of a global stream that mixes a target and a pseudo stream.

Windows. `WindowSource` is a random-access grain source over the frames of one or more stored
sources (the target video's split is one clip; each pseudo clip is one): item i is the window
centred on frame i, positions k = 0..W-1 holding frames i + k - W//2. A position is valid when
its record is of the same clip (same source and clip_id) and its frame_index is the centre's
plus the offset; otherwise (past a split's or clip's ends, over a gap left by frames without a
face) it is invalid and all-zero in every array, as AudioDVP's temporal dataset pads. What a
position holds is the model's business, given by a `FrameFeatures` (a2e_windows.py,
renderer_windows.py): `keep(record)` picks or computes the small per-frame fields (a few KB),
kept per process (up to cache_frames) so that after the first epoch a window re-reads nothing
but, when `reads_centre`, its own record; `position(kept, frame_index)` gives one position's
arrays; `centre(record)` the arrays taken from the centre record alone. Items are
{feature: [W, ...], ..., "valid": bool [W]} plus the centre arrays.

Batches (`make_window_batches`) stack L examples ([L, ...]) and add
  example_id     int64  [L]   global stream position b * G + g (row g of global batch b):
                              per-example randomness on device, independent of the layout
  example_valid  bool   [L]   False only for the padding of a last partial batch

The global stream, identical for any number of processes: global batch b has G rows; Gp =
round(G * pseudo_ratio) of them, spread evenly (row g is pseudo when floor((g+1) Gp / G) >
floor(g Gp / G), `pseudo_rows`), take the next Gp positions of the pseudo stream, the others the
next G - Gp positions of the target stream. Stream s (0 target, 1 pseudo) runs straight through
epochs of its source: position e * N + k is the k-th example of epoch e, whose order is the
permutation np.random.default_rng([seed, s, e]).permutation(N) (seeding with the triple keeps
seed 1's epoch 0 unrelated to seed 0's epoch 1), or source order with shuffle=False. Process p of
P takes rows [pL, (p+1)L), L = G / P, so the processes' batches concatenated in process order are
the single-process batch. num_epochs=None streams forever; a finite stream (evaluation) reads one
source for num_epochs * N positions; with drop_remainder its last partial global batch is
dropped, without it padded with copies of its last example (example_valid False, example_id the
padding's own position), so every process runs the same number of steps with static shapes.

Inside grain: MapDataset.range(slots).map(read one slot).batch(L) is a random-access dataset of
local batches; `to_iter_dataset` reads ahead in threads, `mp_prefetch` (worker_count > 0) hands
whole batches to worker processes in turn and interleaves them back in order, so the output does
not depend on worker_count. The iterator's state is grain's {"next_index": b} (b = batches taken,
the same on every process; one such state per worker), JSON-serialisable; it restores only into
an iterator built with the same arguments. With orbax (as train/checkpointing.py does), every
process saves `grain.checkpoint.CheckpointSave(batches)` beside the train state and restores
with `grain.checkpoint.CheckpointRestore(batches)`; grain writes
<step>/<item>/process_<p>-of-<P>.json, so restoring needs the same process count.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, Protocol

import grain
import numpy as np
from absl import flags

from metatalk_jax.data_pipelines.tfds_shards import ConcatenatedSource
from metatalk_jax.errors import InputError

DEFAULT_CACHE_FRAMES = 1 << 16   # kept frames per process (~330 MB of A2E mel at M = 16)
# An "endless" stream: long enough never to end, short enough for int64 arithmetic.
ENDLESS_STREAM_LENGTH = 2 ** 62


class FrameFeatures(Protocol):
    """What a model's windows hold (module docstring); picklable, for grain worker processes."""

    reads_centre: bool   # True: `centre` needs the centre's whole record on every read

    def keep(self, record: dict) -> dict:
        """The small per-frame fields a window position needs (kept per process)."""

    def position(self, kept: dict, frame_index: int) -> dict[str, np.ndarray]:
        """One valid window position's arrays."""

    def centre(self, record: dict) -> dict[str, np.ndarray]:
        """Arrays from the centre frame's record alone ({} when none)."""


class WindowSource:
    """Random-access grain source: item i = the W-frame window centred on frame i.

    frame_sources: random-access sources of stored frames (dicts with frame_index and, for
      pseudo clips, clip_id), each in (clip, frame) order; windows never span two sources.
    features: the model's FrameFeatures. window: W, odd. cache_frames: most frames kept per
      process. Safe to use from several threads; picklable (workers start with an empty cache).
    """

    def __init__(self, frame_sources: Sequence[Any], features: FrameFeatures, *, window: int,
                 cache_frames: int = DEFAULT_CACHE_FRAMES):
        if window < 1 or window % 2 == 0:
            raise InputError(f"window must be a positive odd number of frames, got {window}")
        self._frames = ConcatenatedSource([s for s in frame_sources if len(s)])
        if len(self._frames) == 0:
            raise ValueError("no frames to make windows from")
        parts = self._frames.sources
        self._source_of = np.repeat(np.arange(len(parts)), [len(s) for s in parts])
        self.features, self.window, self.cache_frames = features, int(window), int(cache_frames)
        self._kept: dict[int, tuple] = {}
        first = self._frames[0]
        sample = features.position(features.keep(first), int(first["frame_index"]))
        # Shapes and dtypes of one position's arrays: the zeros of invalid positions.
        self.position_spec = {k: (np.shape(v), np.asarray(v).dtype) for k, v in sample.items()}

    def __len__(self) -> int:
        return len(self._frames)

    def _read(self, index: int, positions: range) -> tuple[dict | None, dict[int, tuple]]:
        """(the centre's record when the features read it, else None; {position: (clip key,
        frame_index, kept fields)} of `positions`), reading only what is not kept."""
        kept = self._kept
        wanted = [p for p in positions
                  if p not in kept or (p == index and self.features.reads_centre)]
        found = {p: kept[p] for p in positions if p in kept}
        centre = None
        for position, record in zip(wanted, self._frames.__getitems__(wanted)):
            clip = (int(self._source_of[position]), bytes(record.get("clip_id", b"")))
            entry = (clip, int(record["frame_index"]), self.features.keep(record))
            if len(kept) < self.cache_frames:
                kept[position] = entry
            found[position] = entry
            if position == index:
                centre = record
        return centre, found

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        count = len(self._frames)
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for {count} frames")
        w, half = self.window, self.window // 2
        centre, entries = self._read(index, range(max(0, index - half),
                                                  min(count, index + half + 1)))
        clip, centre_frame = entries[index][:2]
        out = {key: np.zeros((w, *shape), dtype) for key, (shape, dtype) in
               self.position_spec.items()}
        out["valid"] = np.zeros((w,), bool)
        for position, (other_clip, frame, kept) in entries.items():
            offset = position - index
            if other_clip != clip or frame != centre_frame + offset:
                continue  # another clip, or a gap: not this frame's neighbour in time
            out["valid"][offset + half] = True
            for key, value in self.features.position(kept, frame).items():
                out[key][offset + half] = value
        if self.features.reads_centre:
            out.update(self.features.centre(centre))
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_kept": {}}


# -- the global stream --------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _epoch_order(seed: int, stream: int, epoch: int, num_examples: int) -> np.ndarray:
    order = np.random.default_rng([seed, stream, epoch]).permutation(num_examples)
    order.flags.writeable = False  # shared between threads through the cache
    return order


def pseudo_rows(global_batch: int, pseudo_count: int) -> np.ndarray:
    """bool [G]: which rows of a global batch are pseudo examples (Gp of them, spread evenly)."""
    g = np.arange(global_batch)
    return (g + 1) * pseudo_count // global_batch > g * pseudo_count // global_batch


@dataclasses.dataclass(frozen=True)
class _StreamPlan:
    """Which example (stream, position in that source) each of this process's slots reads."""

    sizes: tuple[int, int]           # examples of the target and pseudo sources (0 = none)
    global_batch: int
    local_batch: int
    process_index: int
    seed: int
    shuffle: bool
    row_stream: tuple[int, ...]      # [G] stream of each global row
    row_rank: tuple[int, ...]        # [G] rank of the row among its stream's rows
    per_batch: tuple[int, int]       # rows of each stream per global batch
    stream_length: int | None        # finite (single-stream) runs: positions in the stream

    def locate(self, slot: int) -> tuple[int, int, int, bool]:
        """(stream, source index, example_id, real) of this process's `slot`-th example."""
        batch, row = divmod(slot, self.local_batch)
        g = self.process_index * self.local_batch + row
        stream, rank = self.row_stream[g], self.row_rank[g]
        position = batch * self.per_batch[stream] + rank
        real = self.stream_length is None or position < self.stream_length
        if not real:
            position = self.stream_length - 1  # padding repeats the stream's last example
        epoch, offset = divmod(position, self.sizes[stream])
        if self.shuffle:
            offset = int(_epoch_order(self.seed, stream, epoch, self.sizes[stream])[offset])
        return stream, offset, batch * self.global_batch + g, real


class _ReadSlot(grain.transforms.Map):
    """grain Map: this process's slot number -> example dict plus example_id / example_valid."""

    def __init__(self, sources: tuple, plan: _StreamPlan):
        self._sources, self._plan = sources, plan

    def map(self, element: int) -> dict[str, Any]:
        stream, index, example_id, real = self._plan.locate(int(element))
        example = self._sources[stream][index]
        example["example_id"] = np.int64(example_id)
        example["example_valid"] = np.bool_(real)
        return example


def make_window_batches(
    target: WindowSource | None,
    pseudo: WindowSource | None = None,
    *,
    global_batch: int,
    pseudo_ratio: float = 0.0,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    worker_count: int = 0,
    read_threads: int = 4,
    prefetch_batches: int = 4,
) -> grain.DatasetIterator:
    """This process's batches of the global stream (module docstring), a grain iterator.

    Args:
      target, pseudo: window sources (either may be None when its share of the batch is 0).
      global_batch: G, examples per step over all processes; P must divide it.
      pseudo_ratio: fraction of each global batch from `pseudo`, in [0, 1].
      seed: non-negative int; epoch e of stream s is ordered from (seed, s, e).
      process_index, process_count: p and P (jax.process_index() / jax.process_count()).
      num_epochs: None streams forever; a finite count (evaluation) needs a single stream
        (pseudo_ratio 0 or 1) and, without drop_remainder, pads the last batch.
      shuffle: False keeps source order (evaluation).
      worker_count: grain worker processes (spawned) building whole batches; 0 = this process;
        same output for any value. The entry script needs the `if __name__ == "__main__":`
        guard and parsed absl flags (absl.app.run, or absl.flags.FLAGS.mark_as_parsed()).
      read_threads: threads building batches ahead in each reading process.
      prefetch_batches: batches held ready per reading process (memory: L examples each).

    Returns:
      grain DatasetIterator of dicts of arrays with leading axis L = G / P, with
      get_state()/set_state() and orbax support (grain.checkpoint.CheckpointSave/Restore).
    """
    _check_args(global_batch=global_batch, pseudo_ratio=pseudo_ratio, seed=seed,
                process_index=process_index, process_count=process_count,
                num_epochs=num_epochs, read_threads=read_threads,
                prefetch_batches=prefetch_batches, worker_count=worker_count)
    pseudo_count = int(round(global_batch * pseudo_ratio))
    per_batch = (global_batch - pseudo_count, pseudo_count)
    sizes = tuple(len(s) if s is not None else 0 for s in (target, pseudo))
    for stream, name in enumerate(("target", "pseudo")):
        if per_batch[stream] and not sizes[stream]:
            raise InputError(f"{per_batch[stream]} of every {global_batch} examples should come "
                             f"from {name} data, which has none")
    if num_epochs is None:
        stream_length, num_batches = None, ENDLESS_STREAM_LENGTH // global_batch
    else:
        if min(per_batch) > 0:
            raise ValueError("a finite stream (num_epochs) reads one source: use pseudo_ratio "
                             "0 or 1, or give one WindowSource all the clips")
        stream_length = num_epochs * max(sizes[s] for s in (0, 1) if per_batch[s])
        num_batches = (stream_length // global_batch if drop_remainder
                       else -(-stream_length // global_batch))
        if num_batches == 0:
            raise ValueError(f"{stream_length} examples make no full global batch of "
                             f"{global_batch}; use drop_remainder=False or more epochs")
    row_stream = pseudo_rows(global_batch, pseudo_count).astype(int)
    row_rank = np.zeros(global_batch, int)
    for stream in (0, 1):
        rows = np.flatnonzero(row_stream == stream)
        row_rank[rows] = np.arange(len(rows))
    local_batch = global_batch // process_count
    plan = _StreamPlan(sizes, global_batch, local_batch, process_index, int(seed), bool(shuffle),
                       tuple(int(s) for s in row_stream), tuple(int(r) for r in row_rank),
                       per_batch, stream_length)
    batches = (grain.MapDataset.range(num_batches * local_batch)
               .map(_ReadSlot((target, pseudo), plan))
               .batch(local_batch, drop_remainder=True))   # slots are a whole number of batches
    stream = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
    if worker_count > 0:
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=prefetch_batches))
    return iter(stream)


def _check_args(*, global_batch: int, pseudo_ratio: float, seed: int, process_index: int,
                process_count: int, num_epochs: int | None, read_threads: int,
                prefetch_batches: int, worker_count: int) -> None:
    """One-line ValueError/RuntimeError for arguments no stream accepts."""
    if global_batch <= 0:
        raise InputError(f"global_batch must be positive, got {global_batch}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index {process_index} of process_count {process_count}")
    if global_batch % process_count:
        raise InputError(
            f"global_batch {global_batch} is not divisible by process_count {process_count}")
    if not 0.0 <= pseudo_ratio <= 1.0:
        raise InputError(f"pseudo_ratio must be in [0, 1], got {pseudo_ratio}")
    if seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed}")
    if num_epochs is not None and num_epochs <= 0:
        raise InputError(f"num_epochs must be positive or None, got {num_epochs}")
    if read_threads < 0 or prefetch_batches < 1 or worker_count < 0:
        raise InputError("read_threads and worker_count must be >= 0, prefetch_batches >= 1")
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # Fail here with the fix, not later inside a grain thread with UnparsedFlagAccessError.
        raise RuntimeError(
            "grain worker processes read absl flags, which are not parsed yet: run under "
            "absl.app.run or call absl.flags.FLAGS.mark_as_parsed() first (or worker_count=0)")
