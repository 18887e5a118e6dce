"""One subject's target video as a TFDS dataset of ArrayRecord files, written without TensorFlow.

One example = one 25 fps video frame of a prepared subject:

  key            dtype     shape    meaning
  frame_index    int64     []       index in the 25 fps frame sequence
  time_s         float32   []       frame_index / fps, seconds
  face_crop      bytes     []       encoded image (PNG by default, or JPEG) of the R x R RGB crop
  face_mask      bytes     []       PNG of an R x R uint8 mask (0/255): fitted 3D face coverage
  mouth_mask     bytes     []       PNG of an R x R uint8 mask (0/255)
  expression     float32   [E]      3DMM expression coefficients (E from the arguments)
  gamma          float32   [27]     SH lighting (9 bands x RGB)
  angles         float32   [3]      head rotation, radians
  translation    float32   [3]      head translation
  crop_transform float32   [2, 3]   affine, original-frame pixels -> crop pixels
  audio          float32   [N]      16 kHz audio window centred on the frame (N from the arguments)

How it is written (tensorflow-datasets 4.9.10, no TensorFlow, memory independent of video length;
the shard writer, metadata and atomic publication are data_pipelines/tfds_shards.py, shared with
the pseudo-video corpus):
  * Not through a tfds `GeneratorBasedBuilder`: tfds's writer collects each split in its
    Shuffler before writing any shard, and past 1000 MiB spills to bucket files through
    `tf.io.gfile`, which fails without TF. A 3-minute 1024 px subject (4500 frames of 1.5-3 MB)
    would need 7-13 GB of RAM. `write_target_video_shards` streams instead: each frame is
    checked, serialized and appended to the current shard file as it arrives, so besides the
    frame in hand only per-shard counters are kept. Frames arrive in time order, so record i of
    a split is the split's i-th frame without any sorting.
  * Serialization is tfds's own, TF-free: `FeaturesDict.encode_example`, then
    `tfds.core.example_serializer.ExampleSerializer` builds the tf.train.Example from tfds's
    vendored protobuf classes (`tensorflow_datasets.proto.tf_example_pb2`), serialized with
    `deterministic=True` (tfds's default emits the feature map in upb hash order, which changes
    from process to process): same input, byte-identical files.
  * Records go through `array_record`'s `ArrayRecordWriter` with tfds's options (`group_size:1`:
    one record per chunk, as tfds's ArrayRecord adapter writes them, so a random read
    decompresses only its own record and the writer never holds more than one frame).
  * A split's shards are filled in order up to `max_shard_bytes` of serialized records each
    (default 1 GiB, tfds's own maximum). The shard count N is only known at the end, so shards
    are written under provisional names and renamed to tfds's
    `target_video-<split>.array_record-0000i-of-0000N` once the split is complete.
  * The metadata (dataset_info.json, features.json) is tfds's: a `tfds.core.DatasetInfo` built
    from a `DatasetIdentity` (no builder class needed) with `tfds.core.SplitInfo`s holding the
    shard lengths, written by `DatasetInfo.write_to_directory`. `disable_shuffling=True` tells
    readers the records are in a meaningful (time) order.
  * Everything is written into a sibling `incomplete.*` directory, which is renamed to
    `<data_dir>/target_video/1.0.0` only after the last file is closed: an interrupted write
    never leaves a directory that looks like a finished dataset (tfds's readers ignore
    `incomplete.*`). An error removes the partial directory; a killed
    process may leave it behind, harmless, to be deleted by hand.

Reading needs none of this code: `tfds.builder_from_directory(dir).as_data_source(split)`
rebuilds the features from features.json and parses records with numpy (`ExampleParserNp`);
`open_target_source` does that, `decode_image` / `decode_example` decode the stored images, and
data_pipelines/windows.py turns a split into training windows. Encoded images are scalar
`tfds.features.Tensor(shape=(), dtype=np.object_)` features: np.object_ is tfds's string dtype
(what tf.string maps to), stored in a bytes_list and read back as Python `bytes`.
`tfds.features.Image` is avoided: its data source decodes on every read, while we want the exact
bytes back and the decoding done by us, in the grain workers.

On-disk layout (`data_dir` is per subject):
  <data_dir>/target_video/1.0.0/
      dataset_info.json, features.json
      target_video-train.array_record-00000-of-0000K       (K >= 1 shards, see max_shard_bytes)
      target_video-validation.array_record-00000-of-0000M
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from metatalk_jax.data_pipelines.tfds_shards import (DEFAULT_MAX_SHARD_BYTES, TRAIN_SPLIT,
                                                     VALIDATION_SPLIT, RecordSerializer,
                                                     SplitWriter, build_dataset_info,
                                                     publishing_tfds_dir)
from metatalk_jax.errors import InputError, MissingInputError

FPS = 25.0
GAMMA_DIM = 27
POSE_DIM = 3
AUDIO_SAMPLE_RATE = 16_000
IMAGE_KEYS = ("face_crop",)
MASK_KEYS = ("face_mask", "mouth_mask")

DATASET_NAME = "target_video"
VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {
    "1.0.0": "Initial release: per-frame face crop and masks (encoded bytes), 3DMM "
    "coefficients, crop affine and audio window; train/validation split by time.",
}

Example = Mapping[str, Any]
ExamplesFn = Callable[[], Iterable[Example]]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_log = logging.getLogger(__name__)


def split_sizes(num_frames: int, validation_fraction: float) -> tuple[int, int]:
    """(train, validation) frame counts: validation = the last ceil(T * fraction) frames, >= 1.

    The split is by time, not random: neighbouring 25 fps frames are nearly identical, so a random
    split would put near-copies of every validation frame into train and leak.
    """
    if num_frames < 2:
        raise InputError(f"need at least 2 frames to split train/validation, got {num_frames}")
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    # The epsilon stops float noise (30 * 0.1 = 3.0000000000000004) from adding a frame.
    num_val = max(1, math.ceil(num_frames * validation_fraction - 1e-9))
    num_val = min(num_val, num_frames - 1)  # keep at least one training frame
    return num_frames - num_val, num_val


def vector_shapes(expression_dim: int, audio_samples: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the float32 array features (all but frame_index, time_s and the images)."""
    return {
        "expression": (expression_dim,),
        "gamma": (GAMMA_DIM,),
        "angles": (POSE_DIM,),
        "translation": (POSE_DIM,),
        "crop_transform": (2, 3),
        "audio": (audio_samples,),
    }


_VECTOR_DOCS = {
    "expression": "3DMM expression coefficients",
    "gamma": "SH lighting, 9 bands x RGB",
    "angles": "head rotation, radians",
    "translation": "head translation",
    "crop_transform": "affine: original-frame pixels -> crop pixels",
    "audio": "16 kHz audio window centred on the frame",
}
_IMAGE_DOCS = {
    "face_crop": "PNG (or JPEG) bytes of the R x R RGB face crop",
    "face_mask": "PNG bytes of the R x R uint8 0/255 fitted-face mask",
    "mouth_mask": "PNG bytes of the R x R uint8 0/255 mouth mask",
}


def target_video_features(expression_dim: int, audio_samples: int) -> tfds.features.FeaturesDict:
    """The tfds feature spec of one frame (table in the module docstring)."""
    features: dict[str, tfds.features.Tensor] = {
        "frame_index": tfds.features.Tensor(
            shape=(), dtype=np.int64, doc="index in the 25 fps frame sequence"
        ),
        "time_s": tfds.features.Tensor(shape=(), dtype=np.float32, doc="frame_index / fps, s"),
    }
    for key, doc in _IMAGE_DOCS.items():
        # np.object_ is tfds's string dtype (= tf.string): a bytes_list on disk, bytes when read.
        features[key] = tfds.features.Tensor(shape=(), dtype=np.object_, doc=doc)
    for key, shape in vector_shapes(expression_dim, audio_samples).items():
        features[key] = tfds.features.Tensor(shape=shape, dtype=np.float32, doc=_VECTOR_DOCS[key])
    return tfds.features.FeaturesDict(features)


def _normalise(
    example: Example, crop_size: int, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, Any]:
    """Checks one frame dict against the spec; returns it with exact dtypes.

    Done here rather than left to tfds, whose errors print the whole example (megabytes of
    image bytes) without naming the offending field.
    """
    expected = {"frame_index", "time_s", *IMAGE_KEYS, *MASK_KEYS, *shapes}
    if set(example) != expected:
        raise ValueError(
            f"frame dict keys mismatch: missing {sorted(expected - set(example))}, "
            f"unexpected {sorted(set(example) - expected)}"
        )
    out: dict[str, Any] = {
        "frame_index": np.int64(example["frame_index"]),
        "time_s": np.float32(example["time_s"]),
    }
    for key in (*IMAGE_KEYS, *MASK_KEYS):
        value = example[key]
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{key} must be encoded image bytes, got {type(value).__name__}")
        value = bytes(value)  # no copy when it already is bytes
        size = _png_size(value)
        if size is not None and size != (crop_size, crop_size):
            raise ValueError(f"{key} is {size[0]}x{size[1]} pixels, crop_size is {crop_size}")
        out[key] = value
    for key, shape in shapes.items():
        # same_kind lets float64 producers through (rounded to float32), rejects e.g. strings.
        value = np.asarray(example[key]).astype(np.float32, casting="same_kind")
        if value.shape != shape:
            raise ValueError(f"{key} has shape {value.shape}, expected {shape}")
        out[key] = value
    return out


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None if `data` is not PNG (e.g. JPEG)."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")



class _FrameSerializer:
    """Frame dict -> checked, deterministic tf.train.Example bytes, in frame_index order."""

    def __init__(self, features: tfds.features.FeaturesDict, crop_size: int, shapes):
        self._serialize = RecordSerializer(features)
        self._crop_size = crop_size
        self._shapes = shapes
        self._last_index: int | None = None

    def __call__(self, example: Example) -> bytes:
        example = _normalise(example, self._crop_size, self._shapes)
        index = int(example["frame_index"])
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(
                f"frames must come in increasing frame_index order: {index} after "
                f"{self._last_index}"
            )
        self._last_index = index
        return self._serialize(example)




def _dataset_info(
    directory: str,
    features: tfds.features.FeaturesDict,
    split_infos: list[tfds.core.SplitInfo],
    *,
    crop_size: int,
    expression_dim: int,
    audio_samples: int,
) -> tfds.core.DatasetInfo:
    """The target video's DatasetInfo."""
    num_train, num_val = (info.num_examples for info in split_infos)
    return build_dataset_info(
        directory, features, split_infos, name=DATASET_NAME, version=VERSION,
        release_notes=RELEASE_NOTES, module_name=__name__,
        description=(
            f"Target video of one subject at {FPS:g} fps: {num_train + num_val} frames, "
            f"{crop_size}x{crop_size} face crops, expression dim {expression_dim}, "
            f"{audio_samples}-sample audio windows at {AUDIO_SAMPLE_RATE} Hz. Split by time: "
            f"train = first {num_train} frames, validation = last {num_val}."
        ))



def _write_splits(frames, serialize, directory: str, counts, max_shard_bytes: int):
    """Writes the frames of `frames` (an iterator), in order, to each (split, count) of `counts`
    in turn; returns the splits' SplitInfos. A ValueError when there are fewer or more frames
    than the counts add up to."""
    split_infos, written, total = [], 0, sum(count for _, count in counts)
    for split, count in counts:
        writer = SplitWriter(directory, split, max_shard_bytes, DATASET_NAME)
        try:
            for _ in range(count):
                example = next(frames, None)
                if example is None:
                    raise ValueError(f"examples_fn gave {written} frames, num_frames is {total}")
                writer.write(serialize(example))
                del example  # let the frame go before the next one is produced
                written += 1
        finally:
            writer.close()
        split_infos.append(writer.finish())
    if next(frames, None) is not None:
        raise ValueError(f"examples_fn gave more than num_frames={total} frames")
    return split_infos


def write_target_video_shards(
    examples_fn: ExamplesFn,
    *,
    data_dir: str | os.PathLike,
    num_frames: int,
    crop_size: int,
    expression_dim: int,
    audio_samples: int,
    validation_fraction: float = 0.1,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> str:
    """Writes one subject's frames as the `target_video` ArrayRecord dataset, without TensorFlow.

    Streams: one pass over `examples_fn()`, each frame written as it arrives, so memory does not
    grow with the number of frames (module docstring).

    Args:
      examples_fn: returns an iterator over the subject's frame dicts (module docstring) in
        increasing frame_index order, exactly `num_frames` of them. Called once.
      data_dir: per-subject root; the dataset lands in <data_dir>/target_video/1.0.0.
      num_frames: T, total frame count of the subject.
      crop_size: R, side of the face crop and masks, pixels (checked on PNG headers).
      expression_dim: E, expression coefficient count.
      audio_samples: N, audio window length in samples at 16 kHz.
      validation_fraction: share of frames, at the end of the video, held out for validation
        (`split_sizes`).
      overwrite: rebuild an existing dataset. If False, an existing one (a dataset_info.json in
        the target directory) is reused untouched, whatever frames it was written from, and
        `examples_fn` is not called.
      max_shard_bytes: most serialized record bytes per shard file; a split gets as many shards
        as it needs.

    Returns:
      The dataset directory, <data_dir>/target_video/1.0.0 (for `tfds.builder_from_directory`).
    """
    for label, value in (
        ("crop_size", crop_size),
        ("expression_dim", expression_dim),
        ("audio_samples", audio_samples),
        ("max_shard_bytes", max_shard_bytes),
    ):
        if value <= 0:
            raise InputError(f"{label} must be positive, got {value}")
    num_frames, crop_size = int(num_frames), int(crop_size)
    expression_dim, audio_samples = int(expression_dim), int(audio_samples)
    num_train, num_val = split_sizes(num_frames, validation_fraction)
    dataset_dir = os.fspath(epath.Path(data_dir) / DATASET_NAME / str(VERSION))
    if not overwrite and os.path.exists(os.path.join(dataset_dir, "dataset_info.json")):
        _log.info("reusing the existing target_video dataset in %s", dataset_dir)
        return dataset_dir

    features = target_video_features(expression_dim, audio_samples)
    serialize = _FrameSerializer(features, crop_size, vector_shapes(expression_dim, audio_samples))
    with publishing_tfds_dir(dataset_dir, VERSION, replace=True) as staging:
        split_infos = _write_splits(iter(examples_fn()), serialize, staging,
                                    ((TRAIN_SPLIT, num_train), (VALIDATION_SPLIT, num_val)),
                                    max_shard_bytes)
        info = _dataset_info(staging, features, split_infos, crop_size=crop_size,
                             expression_dim=expression_dim, audio_samples=audio_samples)
        info.write_to_directory(staging)
    _log.info(
        "wrote target_video to %s: %s",
        dataset_dir,
        ", ".join(f"{s.name} {s.num_examples} frames in {s.num_shards} shards"
                  for s in split_infos),
    )
    return dataset_dir


# -- reading ---------------------------------------------------------------------------------------

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
    raise MissingInputError(
        f"no prepared target_video dataset in {path} (nor in {versioned}): expected "
        "dataset_info.json; run data_pipelines.subject_frames.write_target_video_shards first")


def open_target_source(data_dir_or_builder_dir: str | os.PathLike, split: str):
    """Random-access source of raw frames of `split` ("train" or "validation"), in time order.

    A tfds ArrayRecordDataSource (no TensorFlow: records are parsed with numpy): `len()` frames,
    `source[i]` is the split's i-th frame as stored (encoded image bytes and numpy arrays, module
    docstring), usable directly as a grain data source.
    """
    builder = tfds.builder_from_directory(target_video_dir(data_dir_or_builder_dir))
    return builder.as_data_source(split=split)


def decode_image(data: bytes, key: str, *, grayscale: bool = False) -> np.ndarray:
    """Encoded bytes of a stored image -> uint8 [R, R, 3] RGB, or [R, R] for grayscale masks.

    Crops are stored as ordinary RGB files; OpenCV decodes to BGR, so colour is swapped back.
    IMREAD_COLOR always gives 3 channels (grey replicated, alpha dropped). A ValueError names
    `key` when the bytes are not an image.
    """
    mode = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), mode)
    if pixels is None:
        raise ValueError(f"could not decode {key} ({len(data)} bytes) as an image")
    return pixels if grayscale else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def decode_example(raw: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One stored frame with its images decoded: face_crop uint8 [R, R, 3] RGB, face_mask /
    mouth_mask uint8 [R, R] (0/255), frame_index int64 [], time_s float32 [], and the float32
    arrays unchanged in shape. A ValueError names an image that is not square or not the crop's
    size."""
    out: dict[str, np.ndarray] = {
        "frame_index": np.asarray(raw["frame_index"], dtype=np.int64),
        "time_s": np.asarray(raw["time_s"], dtype=np.float32),
    }
    for key in IMAGE_KEYS:
        out[key] = decode_image(raw[key], key)
    for key in MASK_KEYS:
        out[key] = decode_image(raw[key], key, grayscale=True)
    for key, value in raw.items():
        if key not in out:
            out[key] = np.asarray(value, dtype=np.float32)
    size = out[IMAGE_KEYS[0]].shape[:2]
    for key in (*IMAGE_KEYS, *MASK_KEYS):
        if out[key].shape[:2] != size or size[0] != size[1]:
            raise ValueError(f"{key} is {out[key].shape[:2]}, expected square {size}")
    return out
