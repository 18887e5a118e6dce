"""The A2E input pipeline: W-frame windows of audio features + expressions, target and pseudo mixed.

An example is centred on one frame i of a clip (the target video is one clip; each pseudo clip is
one) and covers frames i - W//2 .. i + W//2:

  key            dtype    shape         meaning
  mel            float32  [W, 80, M]    Wav2Lip log-mel (in [-4, 4]) of each frame's audio window,
                                        its M columns (12.5 ms apart) centred on the frame
  expression     float32  [W, E]        fitted 3DMM expression of each frame
  valid          bool     [W]           the position holds a frame of the same clip (False past a
                                        clip's ends or over a gap in its frame indices; all-zero)
  source         int32    []            0 = target video, 1 = pseudo video
  frame_index    int64    []            frame i's index in its clip

Features are computed here, in the data workers (numpy), rather than on device: `wav2lip_mel`
is the project's reference implementation of Wav2Lip's features (also used at inference), so the
model sees bit-identical features in training and inference; a frame's mel is computed once per
process and cached (~5 KB for M = 16), after which an example costs a few dict lookups; and the
host -> device transfer is the mel (80 x M floats a frame), not the 0.64 s audio (10240).
`frame_mel` reads only the audio samples its columns need (the result equals the same columns of
the whole window's mel exactly: see its docstring).

Batches (`make_a2e_batches`) stack L examples ([L, ...]) and add example_id int64 [L] (global
position of the example in the stream of global batches: b * G + row) and example_valid bool [L]
(False for the padding of a last partial evaluation batch).

Mixing, identical for any number of processes: global batch b has G rows; Gp = round(G *
pseudo_ratio) of them, spread evenly (row g is pseudo when floor((g+1) Gp / G) > floor(g Gp / G)),
take the next Gp positions of the pseudo stream, the others the next G - Gp positions of the
target stream. Each stream runs through epochs of its own source, each epoch a permutation drawn
from (seed, stream, epoch) (or in order, shuffle=False). Process p of P takes rows [p L, (p+1) L),
L = G / P. Inside grain, as data_pipelines/renderer_windows: MapDataset.range(slots).map(read one
slot).batch(L), read ahead in threads or worker processes; the iterator's state is the number of
batches taken, so it checkpoints with orbax (grain.checkpoint) and restores only into an iterator
built with the same arguments.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from metatalk_jax.data_pipelines.batch_streams import (ENDLESS_STREAM_LENGTH, check_stream_args,
                                          count_global_batches, slot_batches)
from metatalk_jax.data_pipelines.pseudo_video import ConcatenatedSource, open_pseudo_video
from metatalk_jax.data_pipelines.target_loader import open_target_source
from metatalk_jax.media.audio import WAV2LIP_HOP, WAV2LIP_N_FFT, WAV2LIP_NUM_MELS, wav2lip_mel

TARGET, PSEUDO = 0, 1
DEFAULT_CACHE_FRAMES = 1 << 16   # cached frames per process (~330 MB at M = 16)


def mel_column_start(audio_samples: int, mel_columns: int) -> int:
    """First of the M mel columns (of the whole window's mel) centred on the window's centre
    sample N // 2; a ValueError when the window is too short for M whole STFT frames."""
    start = int(round((audio_samples // 2) / WAV2LIP_HOP - (mel_columns - 1) / 2))
    half = WAV2LIP_N_FFT // 2
    if mel_columns < 1 or start * WAV2LIP_HOP < half or \
            (start + mel_columns - 1) * WAV2LIP_HOP + half > audio_samples:
        raise ValueError(f"an audio window of {audio_samples} samples cannot hold {mel_columns} "
                         f"mel columns ({WAV2LIP_N_FFT}-sample frames, hop {WAV2LIP_HOP})")
    return start


def frame_mel(audio_window: np.ndarray, mel_columns: int) -> np.ndarray:
    """float32 [80, M]: columns j0 .. j0+M-1 (`mel_column_start`) of wav2lip_mel(audio_window).

    Computed from the slice [200 j0 - 400, 200 (j0+M-1) + 400) only, whose mel columns 2..M+1
    use no padding. They equal the whole window's columns exactly: the slice restarts the
    pre-emphasis filter at its first sample, which column 2's periodic Hann window weights by 0.
    """
    audio = np.asarray(audio_window, np.float32)
    start = mel_column_start(audio.shape[-1], mel_columns)
    half = WAV2LIP_N_FFT // 2
    piece = audio[start * WAV2LIP_HOP - half:(start + mel_columns - 1) * WAV2LIP_HOP + half]
    return wav2lip_mel(piece)[:, 2:2 + mel_columns]


class A2EWindowSource:
    """Random-access grain source: item i = the window example centred on frame i.

    frame_sources: random-access sources of raw frames (dicts with frame_index, expression,
      audio and, for pseudo data, clip_id), each in (clip, frame) order. Windows never span two
      sources. kind: TARGET or PSEUDO (the examples' `source`). window: W, odd. mel_columns: M.
    Frames' features are cached per process (up to cache_frames), so after the first epoch a
    window reads nothing. Safe to use from several threads; picklable (workers start empty).
    """

    def __init__(self, frame_sources: Sequence[Any], *, kind: int, window: int, mel_columns: int,
                 cache_frames: int = DEFAULT_CACHE_FRAMES):
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number of frames, got {window}")
        self._frames = ConcatenatedSource([s for s in frame_sources if len(s)])
        if len(self._frames) == 0:
            raise ValueError("no frames to make windows from")
        # Which sub-source each position is in: windows stop at source boundaries.
        parts = self._frames.sources
        self._source_of = np.repeat(np.arange(len(parts)), [len(s) for s in parts])
        self.kind, self.window, self.mel_columns = int(kind), int(window), int(mel_columns)
        first = self._frames[0]
        self.expression_dim = int(np.shape(first["expression"])[0])
        self.audio_samples = int(np.shape(first["audio"])[0])
        mel_column_start(self.audio_samples, self.mel_columns)  # fail early on a short window
        self.cache_frames = int(cache_frames)
        self._cache: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def _features(self, positions: range) -> dict[int, tuple]:
        """{position: (clip key, frame_index, expression [E], mel [80, M])} for `positions`."""
        cache = self._cache
        found = {p: cache[p] for p in positions if p in cache}
        missing = [p for p in positions if p not in found]
        for position, record in zip(missing, self._frames.__getitems__(missing)):
            clip = (int(self._source_of[position]), bytes(record.get("clip_id", b"")))
            entry = (clip, int(record["frame_index"]),
                     np.asarray(record["expression"], np.float32),
                     frame_mel(record["audio"], self.mel_columns))
            if len(cache) < self.cache_frames:
                cache[position] = entry
            found[position] = entry
        return found

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        count = len(self._frames)
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for {count} frames")
        w, half = self.window, self.window // 2
        features = self._features(range(max(0, index - half), min(count, index + half + 1)))
        clip, centre_frame = features[index][:2]
        out = {"mel": np.zeros((w, WAV2LIP_NUM_MELS, self.mel_columns), np.float32),
               "expression": np.zeros((w, self.expression_dim), np.float32),
               "valid": np.zeros((w,), bool)}
        for position, (other_clip, frame, expression, mel) in features.items():
            offset = position - index
            if other_clip != clip or frame != centre_frame + offset:
                continue  # another clip, or a gap: not this frame's neighbour in time
            out["valid"][offset + half] = True
            out["expression"][offset + half] = expression
            out["mel"][offset + half] = mel
        out["source"] = np.int32(self.kind)
        out["frame_index"] = np.int64(centre_frame)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}


def target_windows(tfds_dir: str | os.PathLike, split: str, *, window: int, mel_columns: int,
                   cache_frames: int = DEFAULT_CACHE_FRAMES) -> A2EWindowSource:
    """Windows over one split of a subject's target-video shards (one clip)."""
    return A2EWindowSource([open_target_source(tfds_dir, split)], kind=TARGET, window=window,
                           mel_columns=mel_columns, cache_frames=cache_frames)


def pseudo_windows(roots: Sequence[str], split: str, *, window: int, mel_columns: int,
                   expression_dim: int | None = None, audio_samples: int | None = None,
                   subject_fingerprint: str | None = None,
                   cache_frames: int = DEFAULT_CACHE_FRAMES) -> A2EWindowSource | None:
    """Windows over one split of the pseudo-video corpora at `roots` (None if it has no frames);
    the corpora's metadata is checked against the optional arguments."""
    sources = []
    for root in roots:
        corpus = open_pseudo_video(root, expression_dim=expression_dim,
                                   audio_samples=audio_samples,
                                   subject_fingerprint=subject_fingerprint)
        sources.append(corpus.source(split))
    if not sum(len(s) for s in sources):
        return None
    return A2EWindowSource(sources, kind=PSEUDO, window=window, mel_columns=mel_columns,
                           cache_frames=cache_frames)


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
class _MixPlan:
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
    stream_length: int | None        # finite single-stream runs: examples in the stream

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
    def __init__(self, sources: tuple, plan: _MixPlan):
        self._sources, self._plan = sources, plan

    def map(self, element: int) -> dict[str, Any]:
        stream, index, example_id, real = self._plan.locate(int(element))
        example = self._sources[stream][index]
        example["example_id"] = np.int64(example_id)
        example["example_valid"] = np.bool_(real)
        return example


def make_a2e_batches(
    target: A2EWindowSource | None,
    pseudo: A2EWindowSource | None = None,
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
    """This process's batches of the mixed global stream (module docstring), a grain iterator.

    target / pseudo: window sources (either may be None when its share of the batch is 0).
    pseudo_ratio: fraction of each global batch from `pseudo`, in [0, 1].
    num_epochs: None streams forever; a finite count (evaluation) needs a single stream
      (pseudo_ratio 0 or 1) and, without drop_remainder, pads the last batch (example_valid).
    Other arguments as data_pipelines.renderer_windows.make_renderer_batches.
    Returns batches: dicts of arrays with leading axis L = global_batch / process_count.
    """
    check_stream_args(global_batch=global_batch, seed=seed, process_index=process_index,
                      process_count=process_count, num_epochs=num_epochs,
                      read_threads=read_threads, prefetch_batches=prefetch_batches,
                      worker_count=worker_count)
    if not 0.0 <= pseudo_ratio <= 1.0:
        raise ValueError(f"pseudo_ratio must be in [0, 1], got {pseudo_ratio}")
    pseudo_count = int(round(global_batch * pseudo_ratio))
    per_batch = (global_batch - pseudo_count, pseudo_count)
    for stream, (source, name) in enumerate(((target, "target"), (pseudo, "pseudo"))):
        if per_batch[stream] and (source is None or len(source) == 0):
            raise ValueError(f"{per_batch[stream]} of every {global_batch} examples should come "
                             f"from {name} data, which has none")
    row_stream = pseudo_rows(global_batch, pseudo_count).astype(int)
    row_rank = np.zeros(global_batch, int)
    for stream in (0, 1):
        rows = np.flatnonzero(row_stream == stream)
        row_rank[rows] = np.arange(len(rows))
    sizes = tuple(len(s) if s is not None else 0 for s in (target, pseudo))

    if num_epochs is None:
        stream_length, num_batches = None, ENDLESS_STREAM_LENGTH // global_batch
    else:
        if min(per_batch) > 0:
            raise ValueError("a finite stream (num_epochs) reads one source: use pseudo_ratio "
                             "0 or 1, or concatenate the sources")
        stream_length = num_epochs * max(sizes[s] for s in (0, 1) if per_batch[s])
        num_batches = count_global_batches(stream_length, global_batch, drop_remainder)
    local_batch = global_batch // process_count
    plan = _MixPlan(sizes, global_batch, local_batch, process_index, int(seed), bool(shuffle),
                    tuple(int(s) for s in row_stream), tuple(int(r) for r in row_rank),
                    per_batch, stream_length)
    return slot_batches(_ReadSlot((target, pseudo), plan), num_global_batches=num_batches,
                        local_batch=local_batch, read_threads=read_threads,
                        prefetch_batches=prefetch_batches, worker_count=worker_count)
