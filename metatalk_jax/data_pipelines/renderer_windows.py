"""The neural renderer's input pipeline: W-frame windows over the target-video shards, via grain.

AudioDVP's renderer predicts, for target frame i, the real face crop of frame i times frame i's
mouth mask from the 3DMM renders of frames i-3..i+3, each times that frame's mouth mask. The
renders are made on device inside the jitted train step from the coefficients; this module
supplies everything else, one example per frame of a split:

  key               dtype    shape       meaning
  target            uint8    [R, R, 3]   RGB face crop of frame i, 0..255
  mouth_mask        uint8    [W, R, R]   mouth masks (already dilated by prepare), 0/255
  expression        float32  [W, E]      3DMM expression coefficients
  gamma             float32  [W, 27]     SH lighting
  angles            float32  [W, 3]      head rotation, radians
  translation       float32  [W, 3]      head translation
  screen_transform  float32  [W, 2, 3]   frame continuous px -> crop continuous px at R
                                         (face3d.render's `screen_transform=`)
  valid             bool     [W]         window position holds a real frame
  frame_index       int64    []          frame i's index in the video

Window position k holds frame i + k - W//2. A position is invalid, and zero in every array, when
it falls outside the split (AudioDVP's temporal dataset pads with zeros at the ends; validation
is the end of the video, so train windows never reach into it nor validation windows back into
train) or when the video has a gap there (a neighbouring record whose frame_index is not
i + offset: then the record is not the neighbour in time).

Batches (`make_renderer_batches`) stack L examples ([L, ...]) and add
  example_id     int64  [L]   global stream position (below): per-example randomness on device
  example_valid  bool   [L]   False only for the padding of a last partial batch

The global stream, identical for any number of processes:
  * stream position s = e * N + k is the k-th example of epoch e (N = split length); epoch e's
    order is a permutation of the split drawn from (seed, e) (or frame order, shuffle=False).
    Batches run straight across epoch boundaries.
  * global batch b = stream positions [b*G, (b+1)*G). Process p of P takes the contiguous slice
    [b*G + p*L, b*G + (p+1)*L), L = G / P, so the processes' batches concatenated in process
    order are exactly the single-process batch.
  * num_epochs=None streams forever. Otherwise the stream has num_epochs * N positions; with
    drop_remainder the last partial global batch is dropped, without it it is padded with
    copies of the stream's last example (example_valid False, example_id still the padding's
    own position), so every process runs the same number of steps with static shapes.

Inside grain: MapDataset.range(slots).map(read one slot).batch(L) is a random-access dataset of
local batches; `to_iter_dataset` reads ahead in threads, `mp_prefetch` (worker_count > 0) hands
whole batches to worker processes in turn (worker w builds batches w, w + workers, ...) and
interleaves them back in order, so the output does not depend on worker_count. The iterator
state is grain's {"next_index": b}, b = the number of batches taken (the same on every
process; with workers, one such state per worker), JSON-serialisable. It restores only into an iterator built with the same arguments (source,
global_batch, seed, process_index/count, num_epochs, shuffle, drop_remainder, worker_count).

Checkpointing with the model state (orbax-checkpoint 0.12, grain 0.2.18), every process calls:

    import grain, orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=3))
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(train_state),
        data=grain.checkpoint.CheckpointSave(batches)))
    ...
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_train_state),
        data=grain.checkpoint.CheckpointRestore(batches)))
    # restored.state: the model state; `batches` (the same object, also restored.data) now
    # continues after the last batch consumed before the save.

grain's CheckpointHandler writes <ckpt_dir>/<step>/data/process_<p>-of-<P>.json with
p, P = jax.process_index(), jax.process_count(), and each process restores its own file, so
per-process iterator states live side by side (restoring needs the same process count). Save
the iterator between steps, after the batch of step `step` has been taken from it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import cv2
import grain
import numpy as np

from metatalk_jax.data_pipelines.batch_streams import (ENDLESS_STREAM_LENGTH, check_stream_args,
                                          count_global_batches, slot_batches)
from metatalk_jax.data_pipelines.target_loader import open_target_source

DEFAULT_WINDOW = 7  # AudioDVP: frames i-3..i+3
COEFFICIENT_KEYS = ("expression", "gamma", "angles", "translation")
# What a window needs of a neighbouring frame: a few KB, against megabytes for the whole record.
_SMALL_FIELDS = ("frame_index", "mouth_mask", "crop_transform", *COEFFICIENT_KEYS)
MASK_THRESHOLD = 128  # a reduced mask pixel is mouth if at least half its area was


def screen_transform_from_crop_transform(
    crop_transform: np.ndarray, stored_resolution: int, resolution: int
) -> np.ndarray:
    """Frame-to-crop map in continuous coordinates, rescaled to another crop resolution.

    Args:
      crop_transform: [..., 2, 3] affine frame pixel INDEX -> crop pixel INDEX at the stored
        crop size (as written in the shards; what cv2.warpAffine was given).
      stored_resolution: S, side of the stored crops, pixels.
      resolution: R, side of the training crops, pixels.

    Returns:
      [..., 2, 3] float32 map frame continuous -> crop continuous at R (pixel (j, i) centred at
      (j + 0.5, i + 0.5)): with u = A x + t on indices, continuous points shift by 0.5 on both
      sides, giving u' = A x' + (t + 0.5 - A [0.5, 0.5]); then everything scales by R / S (in
      continuous coordinates the crop's edges stay at 0 and S -> R).
    """
    matrix = np.asarray(crop_transform, np.float64)
    linear = matrix[..., :2]
    offset = matrix[..., 2] + 0.5 - linear @ np.array([0.5, 0.5])
    continuous = np.concatenate([linear, offset[..., None]], axis=-1)
    return (continuous * (resolution / stored_resolution)).astype(np.float32)


def _decode(data: bytes, mode: int, key: str) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), mode)
    if pixels is None:
        raise ValueError(f"could not decode {key} ({len(data)} bytes) as an image")
    return pixels


class RendererWindowSource:
    """Random-access grain data source: item i = the renderer example of the split's frame i.

    Items are dicts of numpy arrays (module docstring). Only what the example needs is decoded:
    the face crop of frame i and the mouth masks of the window's frames (face masks, audio and
    the neighbours' crops are skipped). The small fields of every frame read (mouth-mask PNG,
    coefficients, crop transform: a few KB a frame, ~20 MB for 4500 frames) are kept, so after
    the first epoch an example reads only its own record. Picklable, so it also runs in grain
    worker processes (each with its own cache). Safe to call from several threads.

    Args:
      data_dir_or_builder_dir: the subject's data_dir or the target_video/1.0.0 directory.
      split: "train" or "validation".
      window: W, odd number of frames centred on frame i.
      resolution: R, training crop side in pixels; None = the stored crop size S. Otherwise S
        must be a whole multiple of R; images are reduced with cv2.INTER_AREA (box average) and
        masks re-thresholded (>= 128 -> 255, else 0).
      render_cache: optional path of a uint8 [T, R, R, 3] .npy holding the 3DMM render of every
        video frame at R (metatalk_jax/subject/render_cache.py); items then also carry `render`
        uint8 [W, R, R, 3] (zeros at invalid positions). Opened memory-mapped, lazily in each
        process, so pickling the source to grain workers does not copy it.
    """

    def __init__(
        self,
        data_dir_or_builder_dir: str | os.PathLike,
        split: str,
        *,
        window: int = DEFAULT_WINDOW,
        resolution: int | None = None,
        render_cache: str | None = None,
    ):
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number of frames, got {window}")
        self._frames = open_target_source(data_dir_or_builder_dir, split)
        if len(self._frames) == 0:
            raise ValueError(f"split {split!r} has no frames")
        first = self._frames[0]
        self.split = split
        self.window = int(window)
        self.stored_resolution = int(_decode(first["face_crop"], cv2.IMREAD_COLOR, "face_crop")
                                     .shape[0])
        stored = self.stored_resolution
        if resolution is None:
            resolution = stored
        if resolution <= 0 or stored % resolution != 0:
            raise ValueError(
                f"resolution must divide the stored crop size {stored} by a whole factor "
                f"(e.g. {stored}, {stored // 2}, {stored // 4}), got {resolution}"
            )
        self.resolution = int(resolution)
        self._coefficient_shapes = {key: np.shape(first[key]) for key in COEFFICIENT_KEYS}
        # Split position -> the fields a window needs from a neighbour; see _read_window.
        self._small_fields: dict[int, dict[str, Any]] = {}
        self.render_cache = render_cache
        self._renders = None

    def _render_array(self) -> np.ndarray:
        if self._renders is None:
            renders = np.load(self.render_cache, mmap_mode="r")
            r = self.resolution
            if renders.ndim != 4 or renders.shape[1:] != (r, r, 3):
                raise ValueError(f"{self.render_cache}: renders of shape {renders.shape}, "
                                 f"expected [T, {r}, {r}, 3]")
            self._renders = renders
        return self._renders

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        count = len(self._frames)
        if not 0 <= index < count:
            raise IndexError(f"index {index} out of range for {count} frames")
        w, r, half = self.window, self.resolution, self.window // 2
        centre, neighbours = self._read_window(index, range(max(0, index - half),
                                                            min(count, index + half + 1)))
        centre_frame = int(centre["frame_index"])

        out: dict[str, np.ndarray] = {
            "mouth_mask": np.zeros((w, r, r), np.uint8),
            "screen_transform": np.zeros((w, 2, 3), np.float32),
            "valid": np.zeros((w,), bool),
        }
        for key, shape in self._coefficient_shapes.items():
            out[key] = np.zeros((w, *shape), np.float32)
        for position, fields in neighbours.items():
            offset = position - index
            if int(fields["frame_index"]) != centre_frame + offset:
                continue  # a gap in the video: this record is not the neighbour in time
            k = offset + half
            out["valid"][k] = True
            out["mouth_mask"][k] = self._reduce_mask(
                _decode(fields["mouth_mask"], cv2.IMREAD_GRAYSCALE, "mouth_mask"))
            for key in COEFFICIENT_KEYS:
                out[key][k] = fields[key]
            out["screen_transform"][k] = screen_transform_from_crop_transform(
                fields["crop_transform"], self.stored_resolution, r)
        if self.render_cache is not None:
            renders = self._render_array()
            out["render"] = np.zeros((w, r, r, 3), np.uint8)
            for k in np.flatnonzero(out["valid"]):
                out["render"][k] = renders[centre_frame + k - half]
        bgr = _decode(centre["face_crop"], cv2.IMREAD_COLOR, "face_crop")
        out["target"] = cv2.cvtColor(self._reduce(bgr, "face_crop"), cv2.COLOR_BGR2RGB)
        out["frame_index"] = np.int64(centre_frame)
        return out

    def _read_window(self, index: int, positions: range):
        """(raw record of `index`, {position: its small fields}) for the window's positions.

        A record is a whole frame (megabytes of crop at 1024 px) while a neighbour needs only a
        few KB of it, so the small fields of every record read are kept: once each record has
        been read (the first epoch), an example reads one record, its own, instead of W.
        """
        cache = self._small_fields
        wanted = [p for p in positions if p == index or p not in cache]
        centre = None
        for position, record in zip(wanted, self._frames.__getitems__(wanted)):
            cache[position] = {key: (record[key] if key == "mouth_mask" else np.array(record[key]))
                               for key in _SMALL_FIELDS}
            if position == index:
                centre = record
        return centre, {p: cache[p] for p in positions}

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes start with an empty cache rather than a pickled copy, and map the
        # render cache file themselves.
        return {**self.__dict__, "_small_fields": {}, "_renders": None}

    def _reduce(self, image: np.ndarray, key: str) -> np.ndarray:
        stored = self.stored_resolution
        if image.shape[:2] != (stored, stored):
            raise ValueError(f"{key} is {image.shape[:2]}, expected {stored}x{stored}")
        if self.resolution == stored:
            return image
        size = (self.resolution, self.resolution)
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    def _reduce_mask(self, mask: np.ndarray) -> np.ndarray:
        reduced = self._reduce(mask, "mouth_mask")
        if self.resolution == self.stored_resolution:
            return reduced
        # Box averages of a 0/255 mask are partial coverage: back to a hard mask.
        return np.where(reduced >= MASK_THRESHOLD, 255, 0).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """[N] int64 split positions in epoch `epoch`'s order: a permutation drawn from (seed, epoch).

    Seeding with the pair (not seed + epoch) keeps seed s's epoch 1 unrelated to seed s+1's
    epoch 0. Cached: consecutive stream positions almost always share an epoch.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.flags.writeable = False  # shared between threads through the cache
    return order


@dataclasses.dataclass(frozen=True)
class _StreamPlan:
    """Which global stream positions one process reads, and where they come from."""

    num_examples: int  # N, split length
    global_batch: int  # G
    local_batch: int  # L = G / P
    process_index: int  # p
    seed: int
    shuffle: bool
    stream_length: int | None  # num_epochs * N, None = endless
    num_global_batches: int

    def position(self, slot: int) -> int:
        """Global stream position of this process's `slot`-th example."""
        batch, row = divmod(slot, self.local_batch)
        return batch * self.global_batch + self.process_index * self.local_batch + row

    def split_position(self, stream_position: int) -> int:
        epoch, offset = divmod(stream_position, self.num_examples)
        if not self.shuffle:
            return offset
        return int(_epoch_order(self.seed, epoch, self.num_examples)[offset])


class _ReadSlot(grain.transforms.Map):
    """grain Map: this process's slot number -> example dict plus example_id / example_valid."""

    def __init__(self, source: RendererWindowSource, plan: _StreamPlan):
        self._source = source
        self._plan = plan

    def map(self, element: int) -> dict[str, Any]:
        position = self._plan.position(int(element))
        length = self._plan.stream_length
        real = length is None or position < length
        # Padding repeats the stream's last example: real data, so no special shapes or NaNs.
        read_from = position if real else length - 1
        example = self._source[self._plan.split_position(read_from)]
        example["example_id"] = np.int64(position)
        example["example_valid"] = np.bool_(real)
        return example


def make_renderer_batches(
    source: RendererWindowSource,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    worker_count: int = 0,
    read_threads: int = 4,
    prefetch_batches: int = 4,
) -> grain.DatasetIterator:
    """This process's batches of the global stream (module docstring), as a grain iterator.

    Args:
      source: the split's windows.
      global_batch: G, examples per step over all processes.
      seed: non-negative int; epoch e's order is drawn from (seed, e).
      process_index, process_count: p and P (jax.process_index() / jax.process_count()); P must
        divide G.
      num_epochs: passes over the split; None = endless.
      shuffle: False keeps frame order (evaluation).
      drop_remainder: drop the last partial global batch (finite streams) instead of padding it.
      worker_count: grain worker processes (spawned) building whole batches; 0 = this process.
        Same output for any value. The entry script needs the `if __name__ == "__main__":` guard
        and parsed absl flags (absl.app.run, or absl.flags.FLAGS.mark_as_parsed()).
      read_threads: threads building batches ahead in each reading process.
      prefetch_batches: batches held ready per reading process (memory: each is L examples).

    Returns:
      grain DatasetIterator of dicts of arrays with leading axis L = G / P, with
      get_state()/set_state() and orbax support (grain.checkpoint.CheckpointSave/Restore).
    """
    check_stream_args(global_batch=global_batch, seed=seed, process_index=process_index,
                      process_count=process_count, num_epochs=num_epochs,
                      read_threads=read_threads, prefetch_batches=prefetch_batches,
                      worker_count=worker_count)
    num_examples = len(source)
    local_batch = global_batch // process_count
    if num_epochs is None:
        stream_length, num_global_batches = None, ENDLESS_STREAM_LENGTH // global_batch
    else:
        stream_length = num_epochs * num_examples
        num_global_batches = count_global_batches(stream_length, global_batch, drop_remainder)
    plan = _StreamPlan(num_examples, global_batch, local_batch, process_index, int(seed),
                       bool(shuffle), stream_length, num_global_batches)
    return slot_batches(_ReadSlot(source, plan), num_global_batches=num_global_batches,
                        local_batch=local_batch, read_threads=read_threads,
                        prefetch_batches=prefetch_batches, worker_count=worker_count)
