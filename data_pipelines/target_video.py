"""TFDS builder for one subject's target video, written as ArrayRecord without TensorFlow.

One example = one 25 fps video frame of a prepared subject:

  key            dtype     shape    meaning
  frame_index    int64     []       index in the 25 fps frame sequence
  time_s         float32   []       frame_index / fps, seconds
  face_crop      bytes     []       encoded image (PNG by default, or JPEG) of the R x R RGB crop
  face_mask      bytes     []       PNG of an R x R uint8 mask (0/255): fitted 3D face coverage
  mouth_mask     bytes     []       PNG of an R x R uint8 mask (0/255)
  expression     float32   [E]      3DMM expression coefficients (E from the builder config)
  gamma          float32   [27]     SH lighting (9 bands x RGB)
  angles         float32   [3]      head rotation, radians
  translation    float32   [3]      head translation
  crop_transform float32   [2, 3]   affine, original-frame pixels -> crop pixels
  audio          float32   [N]      16 kHz audio window centred on the frame (N from the config)

How this works without TensorFlow (tensorflow-datasets 4.9.10):
  * Encoded images are scalar `tfds.features.Tensor(shape=(), dtype=np.object_)` features:
    np.object_ is tfds's string dtype (what tf.string maps to); stored in a bytes_list, read back
    as Python `bytes`. `tfds.features.Image` is avoided: it skips TF only when fed pre-encoded
    bytes and its data source decodes on every read, while we want the exact bytes back and the
    decoding done by us, in the grain workers.
  * `tfds.core.example_serializer.ExampleSerializer` builds tf.train.Example protos from tfds's
    own vendored protobuf classes (`tensorflow_datasets.proto.tf_example_pb2`), not from TF, and
    `array_record`'s writer writes the files. Reading parses with numpy (`ExampleParserNp`).
  * tfds's writer buffers each split in its Shuffler before writing; past 1000 MiB
    (`tfds.core.shuffle.MAX_MEM_BUFFER_SIZE`) it spills to temporary bucket files through
    `tf.io.gfile`, which fails without TF (ModuleNotFoundError: No module named 'tensorflow',
    from shuffle._Bucket.add). So when TensorFlow is not installed, `write_target_video_shards`
    lifts that limit for the duration of the write: each split is held in memory, roughly the
    sum of its encoded images (about 1.5-3 MB per 1024 px frame).
  * `tfds.core.DatasetInfo` is built directly rather than via `dataset_info_from_configs`, which
    scans this package's folder for README/CITATIONS metadata files; and `code_path` is
    overridden (see there) to dodge a tfds bug needing the `importlib_resources` backport.

Order and determinism:
  * `disable_shuffling=True`: tfds then sorts each split's records by our integer key rather
    than by an md5 of it, so record i of a split is the split's i-th frame in time.
  * Keys are spread over tfds's 128-bit key space (`_sort_key`) so that, when TF is installed and
    tfds does spill to its 1000 buckets, frames fill them in order instead of all landing in
    bucket 0, which tfds would then read back whole into memory.
  * tfds serializes the Example's feature map in upb hash order, which changes from process to
    process (same input gave different bytes per run). `_CanonicalExampleWriter` re-emits every
    record with deterministic protobuf serialization: same input, byte-identical files.

On-disk layout (`data_dir` is per subject; the builder has no configs):
  <data_dir>/target_video/1.0.0/
      dataset_info.json, features.json
      target_video-train.array_record-00000-of-0000K   (K chosen by tfds: 64 MiB-1 GiB shards)
      target_video-validation.array_record-00000-of-00001
  <data_dir>/downloads/   (empty; made by tfds's download manager)
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.core import writer as tfds_writer
from tensorflow_datasets.proto import tf_example_pb2

FPS = 25.0
GAMMA_DIM = 27
POSE_DIM = 3
AUDIO_SAMPLE_RATE = 16_000
IMAGE_KEYS = ("face_crop",)
MASK_KEYS = ("face_mask", "mouth_mask")
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"

Example = Mapping[str, Any]
ExamplesFn = Callable[[], Iterable[Example]]

_KEY_SPACE = 2**128  # tfds's shuffle key space (tfds.core.shuffle.HKEY_SIZE bits)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def split_sizes(num_frames: int, validation_fraction: float) -> tuple[int, int]:
    """(train, validation) frame counts: validation = the last ceil(T * fraction) frames, >= 1.

    The split is by time, not random: neighbouring 25 fps frames are nearly identical, so a random
    split would put near-copies of every validation frame into train and leak.
    """
    if num_frames < 2:
        raise ValueError(f"need at least 2 frames to split train/validation, got {num_frames}")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
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


class _CanonicalExampleWriter(tfds_writer.ExampleWriter):
    """ArrayRecord example writer that re-serializes each tf.Example deterministically.

    tfds emits the Example's feature map in upb hash order, which differs between processes;
    `SerializeToString(deterministic=True)` sorts map keys. Costs one parse + copy per record.
    """

    def write(self, path, examples):
        def canonical():
            for key, serialized in examples:
                proto = tf_example_pb2.Example.FromString(serialized)
                yield key, proto.SerializeToString(deterministic=True)

        return super().write(path, canonical())


class TargetVideo(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One subject's target video as per-frame examples in ArrayRecord files.

    Not registered with tfds (`skip_registration`): it needs the example source at construction,
    so `tfds.builder("target_video")` could not make one anyway. Read prepared data with
    `tfds.builder_from_directory` (data_pipelines.target_loader), which needs no builder code.
    """

    name = "target_video"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: per-frame face crop and masks (encoded bytes), 3DMM "
        "coefficients, crop affine and audio window; train/validation split by time.",
    }

    def __init__(
        self,
        *,
        examples_fn: ExamplesFn,
        num_frames: int,
        crop_size: int,
        expression_dim: int,
        audio_samples: int,
        validation_fraction: float = 0.1,
        data_dir: str | os.PathLike,
        **kwargs: Any,
    ):
        """Configures the builder; nothing is read before `download_and_prepare`.

        Args:
          examples_fn: returns an iterator over the subject's frame dicts (module docstring) in
            increasing frame_index order, exactly `num_frames` of them. Normally called once.
          num_frames: T, total frame count of the subject.
          crop_size: R, side of the face crop and masks, pixels (checked on PNG headers).
          expression_dim: E, expression coefficient count.
          audio_samples: N, audio window length in samples at 16 kHz.
          validation_fraction: share of frames, at the end of the video, held out for validation.
          data_dir: per-subject root directory; data goes to <data_dir>/target_video/1.0.0.
          **kwargs: forwarded to `tfds.core.GeneratorBasedBuilder` (file_format defaults to
            ArrayRecord).
        """
        for label, value in (("crop_size", crop_size), ("expression_dim", expression_dim)):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        if audio_samples <= 0:
            raise ValueError(f"audio_samples must be positive, got {audio_samples}")
        self._split_sizes = split_sizes(num_frames, validation_fraction)
        # Set before super().__init__, which already calls `_info()`.
        self._examples_fn = examples_fn
        self._num_frames = int(num_frames)
        self._crop_size = int(crop_size)
        self._vector_shapes = vector_shapes(int(expression_dim), int(audio_samples))
        kwargs.setdefault("file_format", tfds.core.FileFormat.ARRAY_RECORD)
        super().__init__(data_dir=data_dir, **kwargs)

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds 4.9.10's code_path checks `isinstance(path, importlib_resources.abc.Traversable)`
        # for builders inside a package, but only requires that backport on Python < 3.9, so
        # download_and_prepare dies with "No module named 'importlib_resources'". This returns
        # what tfds's own fallback branch would: the file defining the class.
        return epath.Path(inspect.getfile(cls))

    def _info(self) -> tfds.core.DatasetInfo:
        num_train, num_val = self._split_sizes
        expression_dim, audio_samples = (
            self._vector_shapes["expression"][0],
            self._vector_shapes["audio"][0],
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"Target video of one subject at {FPS:g} fps: {self._num_frames} frames, "
                f"{self._crop_size}x{self._crop_size} face crops, expression dim {expression_dim}, "
                f"{audio_samples}-sample audio windows at {AUDIO_SAMPLE_RATE} Hz. Split by time: "
                f"train = first {num_train} frames, validation = last {num_val}."
            ),
            features=target_video_features(expression_dim, audio_samples),
            disable_shuffling=True,  # records sorted by our key, i.e. in time order
        )

    def _example_writer(self) -> tfds_writer.ExampleWriter:
        return _CanonicalExampleWriter(file_format=self.info.file_format)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: frames come from `examples_fn`
        num_train, num_val = self._split_sizes
        frames = _SharedFrames(self._examples_fn)
        return {
            TRAIN_SPLIT: self._generate_examples(frames, start=0, count=num_train),
            VALIDATION_SPLIT: self._generate_examples(frames, start=num_train, count=num_val),
        }

    def _generate_examples(self, frames: _SharedFrames, *, start: int, count: int):
        """Yields (sort key, example) for frames [start, start + count) of the source."""
        source = frames.starting_at(start)
        last_index = None
        for position in range(count):
            example = next(source, None)
            if example is None:
                raise ValueError(
                    f"examples_fn gave {start + position} frames, num_frames is {self._num_frames}"
                )
            example = _normalise(example, self._crop_size, self._vector_shapes)
            if last_index is not None and example["frame_index"] <= last_index:
                raise ValueError(
                    f"frames must come in increasing frame_index order: "
                    f"{example['frame_index']} after {last_index}"
                )
            last_index = example["frame_index"]
            yield _sort_key(position, count), example
        if start + count == self._num_frames and next(source, None) is not None:
            raise ValueError(f"examples_fn gave more than num_frames={self._num_frames} frames")


class _SharedFrames:
    """One pass of `examples_fn()` handed to the splits in time order.

    tfds generates splits one after another (train fully, then validation), so validation
    continues the train split's iterator instead of re-producing every training frame. If a split
    ever starts elsewhere, a fresh iterator is opened and skipped forward: slower, same output.
    """

    def __init__(self, examples_fn: ExamplesFn):
        self._examples_fn = examples_fn
        self._iterator: Iterator[Example] | None = None
        self._position = 0  # frames already taken from self._iterator

    def starting_at(self, start: int) -> Iterator[Example]:
        if self._iterator is None or self._position != start:
            self._iterator = iter(self._examples_fn())
            self._position = 0
            while self._position < start and next(self._iterator, None) is not None:
                self._position += 1
        return self._counted()

    def _counted(self) -> Iterator[Example]:
        for example in self._iterator:
            self._position += 1
            yield example


def _sort_key(position: int, count: int) -> int:
    """tfds sort key of the `position`-th frame of a `count`-frame split: increases with time.

    Spread over [0, 2**128) because tfds assigns a spilled record to bucket key * 1000 // 2**128:
    plain 0, 1, 2, ... would all share bucket 0, which tfds then loads whole into memory.
    """
    return position * (_KEY_SPACE // count)


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
        value = bytes(value)
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


@contextlib.contextmanager
def _shuffle_buffer_in_memory_without_tensorflow() -> Iterator[None]:
    """Without TF, keeps tfds's writer buffer in memory (its disk spill needs tf.io.gfile).

    With TF installed nothing changes: tfds spills past 1000 MiB and memory stays bounded.
    """
    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    previous = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = sys.maxsize
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = previous


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
) -> str:
    """Writes one subject's frames as the `target_video` ArrayRecord dataset, without TensorFlow.

    Args:
      examples_fn: returns an iterator over the frame dicts in frame order (module docstring).
      data_dir: per-subject root; the dataset lands in <data_dir>/target_video/1.0.0.
      num_frames, crop_size, expression_dim, audio_samples, validation_fraction: see TargetVideo.
      overwrite: rebuild an existing dataset. If False, an existing one is reused untouched
        (tfds's REUSE_DATASET_IF_EXISTS), whatever frames it was written from.

    Returns:
      The dataset directory, <data_dir>/target_video/1.0.0 (for `tfds.builder_from_directory`).
    """
    builder = TargetVideo(
        examples_fn=examples_fn,
        num_frames=num_frames,
        crop_size=crop_size,
        expression_dim=expression_dim,
        audio_samples=audio_samples,
        validation_fraction=validation_fraction,
        data_dir=data_dir,
    )
    mode = (
        tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS  # overwrites the prepared data
        if overwrite
        else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    config = tfds.download.DownloadConfig(
        download_mode=mode,
        try_download_gcs=False,  # local-only data: never look for a prebuilt copy on GCS
    )
    with _shuffle_buffer_in_memory_without_tensorflow():
        builder.download_and_prepare(
            download_config=config, file_format=tfds.core.FileFormat.ARRAY_RECORD
        )
    return os.fspath(builder.data_dir)
