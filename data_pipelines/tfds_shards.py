"""TFDS datasets as ArrayRecord files, written and read without TensorFlow: what the target-video
and pseudo-video formats share.

Writing (tensorflow-datasets 4.9.10): records are tfds's own TF-free serialization of a checked
example (`RecordSerializer`), appended in order to ArrayRecord shards of bounded size
(`SplitWriter`, one record per chunk as tfds's ArrayRecord adapter writes them, so a random read
decompresses only its own record), described by the DatasetInfo tfds would have written
(`build_dataset_info`) and published atomically: everything is written inside an
`incomplete.*` directory (tfds's marker, ignored by its readers) that is renamed into place when
its last file is closed (`publishing_tfds_dir`).

Reading: `tfds.builder_from_directory(dir).as_data_source(split)` rebuilds the features from
features.json and parses records with numpy; `ConcatenatedSource` puts several such sources
(the parts of a pseudo-video corpus, or a split's sources for windows) back to back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from etils import epath
from tensorflow_datasets.core import dataset_info as tfds_dataset_info
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import naming

from metatalk_jax.atomic_files import publishing_dir

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
# Upper bound on the serialized records of one shard file (tfds's own default maximum).
DEFAULT_MAX_SHARD_BYTES = 1 << 30

_FILE_FORMAT = tfds.core.FileFormat.ARRAY_RECORD
# As tfds's ArrayRecordFileAdapter: one record per chunk (cheap random access, no buffering).
_ARRAY_RECORD_OPTIONS = "group_size:1"
_INCOMPLETE_PREFIX = "incomplete."  # tfds's marker for directories still being written


class RecordSerializer:
    """Checked example dict -> deterministic tf.train.Example bytes (tfds's TF-free path).

    The caller checks and normalises the example (exact dtypes and shapes) first.
    """

    def __init__(self, features: tfds.features.FeaturesDict):
        self._features = features
        self._serializer = example_serializer.ExampleSerializer(features.get_serialized_info())

    def __call__(self, example: Mapping[str, Any]) -> bytes:
        proto = self._serializer.get_tf_example(self._features.encode_example(example))
        # Sorted map keys: tfds's plain SerializeToString differs between processes.
        return proto.SerializeToString(deterministic=True)




class SplitWriter:
    """Appends one split's records, in order, to ArrayRecord shards of bounded size.

    Shards are closed once the next record would take them past `max_shard_bytes` of
    serialized records (a single larger record still gets a shard of its own). `finish` renames
    them to tfds's names, which include the shard count, and returns the split's SplitInfo.
    `dataset_name` prefixes the file names (tfds's <name>-<split>.array_record-... template).
    """

    def __init__(self, directory: str, split: str, max_shard_bytes: int, dataset_name: str):
        self._directory = directory
        self._dataset_name = dataset_name
        self._split = split
        self._max_shard_bytes = max_shard_bytes
        self._paths: list[str] = []  # provisional names of the shards written so far
        self._shard_lengths: list[int] = []
        self._shard_bytes = 0
        self._num_bytes = 0
        self._writer = None

    def write(self, record: bytes) -> None:
        if self._writer is not None and self._shard_bytes + len(record) > self._max_shard_bytes:
            self._close_shard()
        if self._writer is None:
            path = os.path.join(
                self._directory,
                f"{self._dataset_name}-{self._split}.partial-{len(self._paths):05d}",
            )
            self._writer = array_record_module.ArrayRecordWriter(path, _ARRAY_RECORD_OPTIONS)
            self._paths.append(path)
            self._shard_lengths.append(0)
            self._shard_bytes = 0
        self._writer.write(record)
        self._shard_lengths[-1] += 1
        self._shard_bytes += len(record)
        self._num_bytes += len(record)

    def _close_shard(self) -> None:
        writer, self._writer = self._writer, None
        writer.close()  # raises RuntimeError if anything failed (write(), too)

    def close(self) -> None:
        """Closes the open shard, if any (also on errors: no file handle is left behind)."""
        if self._writer is not None:
            self._close_shard()

    def finish(self) -> tfds.core.SplitInfo:
        self.close()
        template = naming.ShardedFileTemplate(
            data_dir=epath.Path(self._directory),
            dataset_name=self._dataset_name,
            split=self._split,
            filetype_suffix=_FILE_FORMAT.file_suffix,
        )
        num_shards = len(self._paths)
        for shard_index, path in enumerate(self._paths):
            final = template.sharded_filepath(shard_index=shard_index, num_shards=num_shards)
            os.rename(path, os.fspath(final))
        return tfds.core.SplitInfo(
            name=self._split,
            shard_lengths=list(self._shard_lengths),
            num_bytes=self._num_bytes,
            filename_template=template,
        )



def build_dataset_info(
    directory: str,
    features: tfds.features.FeaturesDict,
    split_infos: list[tfds.core.SplitInfo],
    *,
    name: str,
    version: tfds.core.Version,
    release_notes: Mapping[str, str],
    module_name: str,
    description: str,
) -> tfds.core.DatasetInfo:
    """The DatasetInfo tfds would have written (name, version, splits...), records in order."""
    identity = tfds_dataset_info.DatasetIdentity(
        name=name,
        version=version,
        data_dir=directory,
        module_name=module_name,
        release_notes=dict(release_notes),
    )
    info = tfds.core.DatasetInfo(
        builder=identity,
        description=description,
        features=features,
        disable_shuffling=True,  # records are in a meaningful (time) order
    )
    info.set_file_format(_FILE_FORMAT)
    info.set_splits(tfds.core.SplitDict(split_infos))
    return info



def publishing_tfds_dir(path: str, version: tfds.core.Version | str, *, replace: bool):
    """atomic_files.publishing_dir (a context manager yielding the folder to write into) with
    tfds's marker for folders still being written: the temporary folders beside `path` are
    named incomplete.<random>_<version>, which tfds's readers ignore and the pseudo-video
    writer clears. replace: whether a dataset already at `path` is replaced (else that is a
    FileExistsError)."""
    return publishing_dir(path, replace=replace, temp_prefix=_INCOMPLETE_PREFIX,
                          temp_suffix=f"_{version}")


class ConcatenatedSource:
    """Random-access source over several sources back to back (len, [i], __getitems__).

    Picklable when its parts are (tfds ArrayRecord data sources are), so grain workers can use it.
    """

    def __init__(self, sources: Sequence[Any]):
        self._sources = list(sources)
        self._starts = np.cumsum([0] + [len(s) for s in self._sources])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def sources(self) -> list:
        return list(self._sources)

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        part = int(np.searchsorted(self._starts, index, side="right") - 1)
        return part, index - int(self._starts[part])

    def __getitem__(self, index: int):
        part, offset = self._locate(int(index))
        return self._sources[part][offset]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [self[i] for i in indices]
