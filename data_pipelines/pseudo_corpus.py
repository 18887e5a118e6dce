"""The pseudo-video corpus (Wav2Lip-driven clips of the target, refitted) as TFDS ArrayRecord data.

One example = one 25 fps frame of one pseudo clip (a clip = the target video re-voiced by Wav2Lip
with one audio clip, e.g. one LRS2 utterance):

  key           dtype     shape   meaning
  clip_id       bytes     []      clip name, e.g. b"spk01/00012" (UTF-8)
  frame_index   int64     []      index of the frame in its clip (strictly increasing)
  time_s        float32   []      frame time in the clip, seconds
  source_frame  int64     []      target-video frame whose background and pose the frame was made on
  expression    float32   [E]     3DMM expression fitted on the pseudo frame
  audio         float32   [N]     16 kHz audio of the clip centred on the frame, zero past its ends
                                  (the target shards' window convention)

Splits: "train" and "validation", by CLIP (a validation clip's frames are all held out, so no
near-identical neighbour of a held-out frame is trained on). A clip's split is its explicit
`PseudoClip.split`, else `clip_split(clip_id, validation_fraction)`: a hash of the id, so the
assignment does not depend on the order or number of clips written, which appending needs.

Appending (pseudo generation runs over hundreds of clips and must survive interruption). Chosen
design: the corpus is a directory of PARTS, each a complete, immutable tfds dataset holding a
batch of whole clips, published atomically:

  <root>/pseudo_video.json                 corpus metadata: format, fps, sample_rate, audio_samples,
                                           expression_dim, subject_fingerprint,
                                           validation_fraction, and the clip list (id, split,
                                           frames, part), rewritten after every part
  <root>/part-00000/pseudo_video/1.0.0/    dataset_info.json, features.json, part.json (its clips),
                                           pseudo_video-<split>.array_record-0000i-of-0000K
  <root>/part-00001/...
  <root>/incomplete.*                      a part being written (ignored, removed by next writer)

A part is written inside incomplete.<random>_1.0.0 with data_pipelines.tfds_shards's shard
writer and renamed to part-<n> when its last file is closed, so a crash loses at most the part in
progress and a reader never sees half a part. `PseudoVideoWriter.done_clips()` tells a resumed
generator what to skip. Merging per-clip staging files at the end was the alternative; it needs
the whole corpus written again and gives nothing usable until the end, while readers of parts
just concatenate their sources (each split stays in (clip, frame) order). The per-part
part.json, not the corpus json, is the truth about what a part holds; the corpus json is
rewritten from the parts, so a crash between a part's rename and the json's rewrite loses
nothing. One writer at a time per corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from metatalk_jax.atomic_files import write_json
from metatalk_jax.data_pipelines.subject_frames import AUDIO_SAMPLE_RATE, FPS
from metatalk_jax.data_pipelines.tfds_shards import (DEFAULT_MAX_SHARD_BYTES, TRAIN_SPLIT,
                                                     VALIDATION_SPLIT, ConcatenatedSource,
                                                     RecordSerializer, SplitWriter,
                                                     build_dataset_info, publishing_tfds_dir)
from metatalk_jax.errors import InputError

DATASET_NAME = "pseudo_video"
VERSION = tfds.core.Version("1.0.0")
RELEASE_NOTES = {"1.0.0": "Initial release: per-frame clip id, frame/source indices, fitted "
                          "expression and audio window; train/validation split by clip."}
FORMAT = "metatalk_jax.pseudo_video"
FORMAT_VERSION = 1
CORPUS_JSON = "pseudo_video.json"
PART_JSON = "part.json"
SPLITS = (TRAIN_SPLIT, VALIDATION_SPLIT)
_PART_PATTERN = re.compile(r"^part-(\d{5,})$")
# Corpus-level fields every part must agree on (checked when a writer reopens a corpus).
_FIXED_FIELDS = ("fps", "sample_rate", "audio_samples", "expression_dim", "subject_fingerprint",
                 "validation_fraction")


def pseudo_video_features(expression_dim: int, audio_samples: int) -> tfds.features.FeaturesDict:
    """The tfds feature spec of one pseudo frame (table in the module docstring)."""
    t = tfds.features.Tensor
    return tfds.features.FeaturesDict({
        "clip_id": t(shape=(), dtype=np.object_, doc="clip name, UTF-8"),
        "frame_index": t(shape=(), dtype=np.int64, doc="frame index in the clip"),
        "time_s": t(shape=(), dtype=np.float32, doc="frame time in the clip, s"),
        "source_frame": t(shape=(), dtype=np.int64, doc="target frame used for background/pose"),
        "expression": t(shape=(expression_dim,), dtype=np.float32, doc="fitted 3DMM expression"),
        "audio": t(shape=(audio_samples,), dtype=np.float32,
                   doc="16 kHz audio window centred on the frame"),
    })


def clip_split(clip_id: str, validation_fraction: float) -> str:
    """"validation" for a stable pseudo-random `validation_fraction` of clip ids, else "train".

    The first 8 bytes of SHA-256(clip_id) as a fraction of 2**64: independent of how many clips
    there are and in which order they are written.
    """
    digest = hashlib.sha256(clip_id.encode("utf-8")).digest()
    unit = int.from_bytes(digest[:8], "big") / 2.0**64
    return VALIDATION_SPLIT if unit < validation_fraction else TRAIN_SPLIT


@dataclasses.dataclass
class PseudoClip:
    """One pseudo clip to write. T frames; arrays are converted to float32 / int64.

    clip_id: non-empty name, unique in the corpus (e.g. "spk01/00012").
    expression: [T, E]; audio: [T, N] (the window of each frame); source_frame: [T].
    frame_index: [T] strictly increasing (None = 0..T-1); time_s: [T] seconds (None =
    frame_index / fps). split: "train" / "validation", or None for `clip_split`.
    """

    clip_id: str
    expression: Any
    audio: Any
    source_frame: Any
    frame_index: Any = None
    time_s: Any = None
    split: str | None = None


class PseudoVideoWriter:
    """Appends parts of whole clips to a pseudo-video corpus at `root` (module docstring).

    Creates the corpus, or reopens an existing one whose metadata must match the arguments
    (a ValueError names the corpus file and the field otherwise). Opening removes stale
    incomplete.* directories left by a killed writer.
    """

    def __init__(self, root: str | os.PathLike, *, expression_dim: int, audio_samples: int,
                 subject_fingerprint: str, fps: float = FPS,
                 sample_rate: int = AUDIO_SAMPLE_RATE, validation_fraction: float = 0.1,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        for label, value in (("expression_dim", expression_dim), ("audio_samples", audio_samples),
                             ("fps", fps), ("sample_rate", sample_rate),
                             ("max_shard_bytes", max_shard_bytes)):
            if value <= 0:
                raise ValueError(f"{label} must be positive, got {value}")
        if not 0.0 <= validation_fraction < 1.0:
            raise InputError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        self.root = os.fspath(root)
        self.max_shard_bytes = int(max_shard_bytes)
        self.meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "fps": float(fps),
                     "sample_rate": int(sample_rate), "audio_samples": int(audio_samples),
                     "expression_dim": int(expression_dim),
                     "subject_fingerprint": str(subject_fingerprint),
                     "validation_fraction": float(validation_fraction)}
        os.makedirs(self.root, exist_ok=True)
        corpus_json = os.path.join(self.root, CORPUS_JSON)
        if os.path.exists(corpus_json):
            existing = _read_json(corpus_json)
            _check_format(existing, corpus_json)
            for field in _FIXED_FIELDS:
                if existing.get(field) != self.meta[field]:
                    raise InputError(f"{corpus_json}: {field} is {existing.get(field)!r}, this "
                                     f"writer has {self.meta[field]!r}")
        for name in os.listdir(self.root):
            if name.startswith("incomplete."):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
        self._features = pseudo_video_features(int(expression_dim), int(audio_samples))
        self._serialize = RecordSerializer(self._features)
        self._write_corpus_json()

    def done_clips(self) -> set[str]:
        """Ids of the clips in finished parts (a resumed generator skips them)."""
        return {clip["clip_id"] for part in _finished_parts(self.root) for clip in part[1]["clips"]}

    def write_part(self, clips: Iterable[PseudoClip]) -> str:
        """Writes `clips` (one pass, clip by clip) as the next part; returns its dataset dir.

        Nothing of the part is visible until all of it is written; on any error the staging
        directory is removed and the corpus is as before.
        """
        done = self.done_clips()
        parts = [int(_PART_PATTERN.match(name).group(1)) for name in os.listdir(self.root)
                 if _PART_PATTERN.match(name)]
        part_name = f"part-{max(parts, default=-1) + 1:05d}"
        with publishing_tfds_dir(os.path.join(self.root, part_name), VERSION,
                                 replace=False) as staging:
            dataset_dir = os.path.join(staging, DATASET_NAME, str(VERSION))
            os.makedirs(dataset_dir)
            writers = {split: SplitWriter(dataset_dir, split, self.max_shard_bytes, DATASET_NAME)
                       for split in SPLITS}
            listed = []
            try:
                for clip in clips:
                    split, count = self._write_clip(clip, writers, done)
                    done.add(clip.clip_id)
                    listed.append({"clip_id": clip.clip_id, "split": split, "num_frames": count})
            finally:
                for writer in writers.values():
                    writer.close()
            if not listed:
                raise ValueError(f"{self.root}: write_part got no clips")
            split_infos = [writers[s].finish() for s in SPLITS]
            counts = {s: sum(c["num_frames"] for c in listed if c["split"] == s) for s in SPLITS}
            info = build_dataset_info(
                dataset_dir, self._features, split_infos, name=DATASET_NAME, version=VERSION,
                release_notes=RELEASE_NOTES, module_name=__name__,
                description=(f"Pseudo-video frames at {self.meta['fps']:g} fps, "
                             f"{len(listed)} clips, expression dim "
                             f"{self.meta['expression_dim']}: train {counts[TRAIN_SPLIT]} / "
                             f"validation {counts[VALIDATION_SPLIT]} frames (split by clip)."))
            info.write_to_directory(dataset_dir)
            write_json(os.path.join(dataset_dir, PART_JSON),
                       {**self.meta, "part": part_name, "clips": listed, "num_frames": counts})
        self._write_corpus_json()
        return os.path.join(self.root, part_name, DATASET_NAME, str(VERSION))

    def _write_clip(self, clip: PseudoClip, writers, done: set[str]) -> tuple[str, int]:
        arrays = _checked_clip(clip, self.meta, done)
        split = clip.split or clip_split(clip.clip_id, self.meta["validation_fraction"])
        writer = writers[split]
        clip_bytes = clip.clip_id.encode("utf-8")
        for t in range(len(arrays["frame_index"])):
            writer.write(self._serialize({
                "clip_id": clip_bytes,
                "frame_index": arrays["frame_index"][t], "time_s": arrays["time_s"][t],
                "source_frame": arrays["source_frame"][t],
                "expression": arrays["expression"][t], "audio": arrays["audio"][t]}))
        return split, len(arrays["frame_index"])

    def _write_corpus_json(self) -> None:
        clips = [{**clip, "part": name} for name, part in _finished_parts(self.root)
                 for clip in part["clips"]]
        write_json(os.path.join(self.root, CORPUS_JSON), {**self.meta, "clips": clips})


def _checked_clip(clip: PseudoClip, meta: dict, done: set[str]) -> dict[str, np.ndarray]:
    """The clip's arrays with exact dtypes, or a ValueError naming the clip and the problem."""
    name = clip.clip_id
    if not isinstance(name, str) or not name:
        raise ValueError(f"clip_id must be a non-empty string, got {name!r}")
    if name in done:
        raise ValueError(f"clip {name!r} is already in the corpus (or twice in this part)")
    if clip.split not in (None, *SPLITS):
        raise ValueError(f"clip {name!r}: split must be one of {SPLITS} or None, got "
                         f"{clip.split!r}")

    def floats(value, field):
        try:
            return np.asarray(value).astype(np.float32, casting="same_kind")
        except TypeError:
            raise ValueError(f"clip {name!r}: {field} is not numeric") from None

    out = {"expression": floats(clip.expression, "expression"),
           "audio": floats(clip.audio, "audio")}
    count = out["expression"].shape[0] if out["expression"].ndim else 0
    if count == 0:
        raise ValueError(f"clip {name!r} has no frames")
    expected = {"expression": (count, meta["expression_dim"]),
                "audio": (count, meta["audio_samples"])}
    for field, shape in expected.items():
        if out[field].shape != shape:
            raise ValueError(f"clip {name!r}: {field} has shape {out[field].shape}, expected "
                             f"{shape}")
    index = np.arange(count) if clip.frame_index is None else np.asarray(clip.frame_index)
    out["frame_index"] = index.astype(np.int64)
    out["source_frame"] = np.asarray(clip.source_frame).astype(np.int64)
    for field in ("frame_index", "source_frame"):
        if out[field].shape != (count,):
            raise ValueError(f"clip {name!r}: {field} has shape {out[field].shape}, expected "
                             f"({count},)")
    if np.any(np.diff(out["frame_index"]) <= 0):
        raise ValueError(f"clip {name!r}: frame_index must be strictly increasing")
    times = out["frame_index"] / meta["fps"] if clip.time_s is None else clip.time_s
    out["time_s"] = floats(times, "time_s").reshape(-1)
    if out["time_s"].shape != (count,):
        raise ValueError(f"clip {name!r}: time_s has {out['time_s'].size} values, expected {count}")
    for field in ("expression", "audio", "time_s"):
        if not np.all(np.isfinite(out[field])):
            raise ValueError(f"clip {name!r}: {field} holds NaN or Inf")
    return out


# -- reading ---------------------------------------------------------------------------------------

def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None


def _check_format(meta: dict, path: str) -> None:
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a pseudo-video corpus (format {meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise InputError(f"{path}: pseudo-video format v{meta['format_version']} is newer than "
                         f"this code reads (v{FORMAT_VERSION})")


def _finished_parts(root: str) -> list[tuple[str, dict]]:
    """[(part name, its part.json)] of the finished parts, in part order."""
    out = []
    for name in sorted(os.listdir(root)):
        if not _PART_PATTERN.match(name):
            continue
        path = os.path.join(root, name, DATASET_NAME, str(VERSION), PART_JSON)
        if not os.path.isfile(path):
            raise InputError(f"{os.path.join(root, name)}: a part without {PART_JSON} (not "
                             "written by PseudoVideoWriter?)")
        out.append((name, _read_json(path)))
    return out


@dataclasses.dataclass
class PseudoVideo:
    """An opened corpus: metadata, clips per split, and the finished parts' dataset dirs."""

    root: str
    meta: dict
    part_dirs: list[str]
    clips: dict[str, list[dict]]   # split -> [{"clip_id", "num_frames", "part"}] in record order

    def num_frames(self, split: str) -> int:
        return sum(c["num_frames"] for c in self.clips[split])

    def source(self, split: str) -> ConcatenatedSource:
        """Raw frames of `split` over all parts: item i is a dict (clip_id bytes, arrays)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        sources = []
        for part_dir in self.part_dirs:
            builder = tfds.builder_from_directory(part_dir)
            # tfds cannot open a split without shards; parts often have no validation clip.
            if builder.info.splits[split].num_shards:
                sources.append(builder.as_data_source(split=split))
        return ConcatenatedSource(sources)


def open_pseudo_video(root: str | os.PathLike, *, expression_dim: int | None = None,
                      audio_samples: int | None = None,
                      subject_fingerprint: str | None = None) -> PseudoVideo:
    """Opens the corpus at `root` (every finished part); the optional arguments are checked
    against its metadata (ValueError naming the corpus file and the field)."""
    root = os.fspath(root)
    corpus_json = os.path.join(root, CORPUS_JSON)
    if not os.path.isfile(corpus_json):
        raise InputError(f"{root}: not a pseudo-video corpus (no {CORPUS_JSON})")
    meta = _read_json(corpus_json)
    _check_format(meta, corpus_json)
    for field, wanted in (("expression_dim", expression_dim), ("audio_samples", audio_samples),
                          ("subject_fingerprint", subject_fingerprint)):
        if wanted is not None and meta.get(field) != wanted:
            raise InputError(f"{corpus_json}: {field} is {meta.get(field)!r}, expected {wanted!r}")
    parts = _finished_parts(root)
    clips: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for name, part in parts:
        for field in _FIXED_FIELDS:
            if part.get(field) != meta.get(field):
                raise InputError(f"{os.path.join(root, name)}: {field} {part.get(field)!r} "
                                 f"differs from the corpus's {meta.get(field)!r}")
        for clip in part["clips"]:
            clips[clip["split"]].append({**clip, "part": name})
    part_dirs = [os.path.join(root, name, DATASET_NAME, str(VERSION)) for name, _ in parts]
    return PseudoVideo(root, meta, part_dirs, clips)
