"""Reads the `target_video` ArrayRecord dataset back, without TensorFlow, and batches it with grain.

Reading goes through `tfds.builder_from_directory(dir).as_data_source(split)`: it rebuilds the
feature spec from features.json (no builder code or registration needed) and returns a random
access source whose items are parsed with numpy (`ExampleParserNp`). Items are "raw" frames:
encoded image bytes plus numpy arrays (see data_pipelines.target_video). `decode_example`
turns them into pixels; the grain loader then scales to float32 and batches.

Loader element (one frame; batches add a leading B axis):
  frame_index    int64    []          time_s         float32  []  (seconds)
  face_crop      float32  [R, R, 3]   RGB in [0, 1]
  face_mask      float32  [R, R]      {0, 1}         mouth_mask  float32  [R, R]  {0, 1}
  expression     float32  [E]         gamma          float32  [27]
  angles         float32  [3] (rad)   translation    float32  [3]
  crop_transform float32  [2, 3]      audio          float32  [N]  (16 kHz)

Colour convention: encoded crops are ordinary RGB images (as any image viewer shows them). OpenCV
works in BGR, so a producer using cv2.imencode must pass cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR);
`decode_example` converts back to RGB.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import cv2
import grain
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from metatalk_jax.data_pipelines.target_video import DATASET_NAME, IMAGE_KEYS, MASK_KEYS, VERSION

RawExample = Mapping[str, Any]


def target_video_dir(data_dir_or_builder_dir: str | os.PathLike) -> str:
    """The prepared dataset directory (the one holding dataset_info.json).

    Accepts either that directory itself (what `write_target_video_shards` returns) or the
    per-subject `data_dir` given to the writer, in which case <data_dir>/target_video/1.0.0 (the
    dataset's current version) is used.
    """
    path = os.fspath(data_dir_or_builder_dir)
    if os.path.exists(os.path.join(path, "dataset_info.json")):
        return path
    versioned = os.path.join(path, DATASET_NAME, str(VERSION))
    if os.path.exists(os.path.join(versioned, "dataset_info.json")):
        return versioned
    raise FileNotFoundError(
        f"no prepared target_video dataset in {path} (nor in {versioned}): expected "
        "dataset_info.json; run data_pipelines.target_video.write_target_video_shards first"
    )


def open_target_source(data_dir_or_builder_dir: str | os.PathLike, split: str):
    """Random-access source of raw frames of `split` ("train" or "validation"), in time order.

    Returns a `tfds` ArrayRecordDataSource: `len()` frames, `source[i]` is the i-th frame of the
    split (a dict of bytes and numpy arrays), usable directly as a grain data source.
    """
    builder = tfds.builder_from_directory(target_video_dir(data_dir_or_builder_dir))
    return builder.as_data_source(split=split)


def _decode_image(data: bytes, flags: int, key: str) -> np.ndarray:
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if pixels is None:
        raise ValueError(f"could not decode {key} ({len(data)} bytes) as an image")
    return pixels


def decode_example(raw: RawExample) -> dict[str, np.ndarray]:
    """Decodes one raw frame: images to uint8 pixels, everything else to typed numpy arrays.

    Args:
      raw: a frame as read from the data source (encoded image bytes + arrays).

    Returns:
      dict with face_crop uint8 [R, R, 3] RGB, face_mask / mouth_mask uint8 [R, R] (0/255),
      frame_index int64 [], time_s float32 [], and the float32 vectors unchanged in shape.
    """
    out: dict[str, np.ndarray] = {
        "frame_index": np.asarray(raw["frame_index"], dtype=np.int64),
        "time_s": np.asarray(raw["time_s"], dtype=np.float32),
    }
    for key in IMAGE_KEYS:
        # IMREAD_COLOR always gives 3 channels (grey is replicated, alpha dropped), in BGR order.
        bgr = _decode_image(raw[key], cv2.IMREAD_COLOR, key)
        out[key] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    for key in MASK_KEYS:
        out[key] = _decode_image(raw[key], cv2.IMREAD_GRAYSCALE, key)
    for key, value in raw.items():
        if key not in out:
            out[key] = np.asarray(value, dtype=np.float32)
    size = out[IMAGE_KEYS[0]].shape[:2]
    for key in (*IMAGE_KEYS, *MASK_KEYS):
        if out[key].shape[:2] != size or size[0] != size[1]:
            raise ValueError(f"{key} is {out[key].shape[:2]}, expected square {size}")
    return out


class DecodeTargetFrame(grain.transforms.Map):
    """grain Map: raw frame -> decoded frame with images as float32 in [0, 1] (module docstring).

    Stateless and picklable, so it also runs in grain worker processes.
    """

    def map(self, element: RawExample) -> dict[str, np.ndarray]:
        frame = decode_example(element)
        for key in (*IMAGE_KEYS, *MASK_KEYS):
            # Divide (not multiply by 1/255) so each value is the correctly rounded k / 255.
            frame[key] = frame[key].astype(np.float32) / np.float32(255.0)
        return frame


def make_target_loader(
    data_dir_or_builder_dir: str | os.PathLike,
    split: str,
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    worker_count: int = 0,
) -> grain.DataLoader:
    """grain DataLoader over one split of a prepared target video.

    Iterate with `it = iter(loader)`; `it.get_state()` returns bytes that, given to
    `it2.set_state(state)` on an iterator of a loader built with the same arguments, resume
    exactly where `it` stood, so a restarted training run sees the same batches in the same order.

    Args:
      data_dir_or_builder_dir: see `target_video_dir`.
      split: "train" or "validation".
      batch_size: frames per batch (per process).
      seed: shuffle seed, an int in [0, 2**32). Each epoch is reshuffled from (seed, epoch).
      shard_index, shard_count: this process's shard (e.g. jax.process_index() / process_count()).
        Shards are contiguous, disjoint ranges of the split's frames (grain's IndexSampler).
      num_epochs: passes over the shard; None repeats forever.
      shuffle: shuffle within the shard; False gives time order.
      drop_remainder: drop the last partial batch, and also the split's last
        (num_frames % shard_count) frames so every shard has the same size and all processes run
        the same number of steps. With False, shards differ by at most one frame and together
        cover the split (but with a finite num_epochs grain still caps every shard at
        num_epochs * num_frames // shard_count frames).
      worker_count: grain worker processes for decoding; 0 decodes in this process. The batch
        order depends on it (each worker batches its own slice of the index stream), so a saved
        state only restores on a loader with the same worker_count. grain reads its absl flags
        when starting workers: the caller must have parsed absl flags (absl.app.run, or
        absl.flags.FLAGS.mark_as_parsed()), and the entry script needs the
        `if __name__ == "__main__":` guard because workers are spawned.

    Returns:
      grain.DataLoader yielding dicts of batched arrays (module docstring), leading axis B.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # Fail here with the fix, not later inside a grain thread with UnparsedFlagAccessError.
        raise RuntimeError(
            "grain worker processes read absl flags, which are not parsed yet: run under "
            "absl.app.run or call absl.flags.FLAGS.mark_as_parsed() first (or use worker_count=0)"
        )
    source = open_target_source(data_dir_or_builder_dir, split)
    shard_options = grain.sharding.ShardOptions(
        shard_index=shard_index, shard_count=shard_count, drop_remainder=drop_remainder
    )
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard_options,
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[
            DecodeTargetFrame(),
            grain.transforms.Batch(batch_size=batch_size, drop_remainder=drop_remainder),
        ],
        # The sampler and the loader must agree on sharding: the loader picks every
        # shard_count-th sampler index starting at shard_index.
        shard_options=shard_options,
        worker_count=worker_count,
    )
