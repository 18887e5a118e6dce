"""Mouth references: for any expression, the subject's own frame whose mouth is most like it.

The renderer draws the mouth region from the 3DMM renders and from one real crop of the subject,
redrawn in the render's geometry (face3d/texture_transfer.py): the "reference". A reference
carries what a 3DMM cannot (lip texture, teeth, the inside of the mouth, stubble) at the
footage's own detail, so the generator need not invent it from an average. It is chosen by the
mouth alone, never by the frame the output is drawn on:

  mouth shape of an expression = the 20 lip landmarks (iBUG 48-67) of the subject's 3D face with
      that expression and no pose (model units), flattened to [60];
  training frame i: the training frame r nearest to i's fitted mouth with |r - i| > gap, so the
      generator learns to use a similar, never the same, mouth (a window of neighbours would
      hand it the answer);
  inference: the training frame nearest to the driven mouth (the frames the renderer learnt
      from; a held-out frame driven by its own expression never finds itself), kept from one
      output frame to the next unless another is clearly nearer (`choose_references`), so the
      texture does not flicker between two equally good frames.

`ReferenceCrops` reads the chosen frames' stored face crops from the subject's target-video
shards (random access, a small cache).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from metatalk_jax.face3d.morphable import MorphableModel

LIP_LANDMARKS = slice(48, 68)
DEFAULT_GAP_S = 0.2          # training references are at least this far from their frame
DEFAULT_HYSTERESIS = 0.25    # inference keeps its reference unless another is 25% nearer


def mouth_shapes(model: MorphableModel, expressions) -> np.ndarray:
    """float64 [N, 60]: the pose-free lip landmarks of expressions [N, E] on `model` (the
    subject's folded model: identity in its mean shape)."""
    ids = np.asarray(model.landmark_ids)[LIP_LANDMARKS]
    mean = np.asarray(model.mean_shape, np.float64)[ids]                       # [20, 3]
    e = np.asarray(expressions, np.float64)
    basis = np.asarray(model.exp_basis, np.float64)[ids][..., :e.shape[-1]]    # [20, 3, E]
    return (mean[None] + np.einsum("lck,nk->nlc", basis, e)).reshape(len(e), -1)


def _distances(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """[N, M] Euclidean distances between mouth shapes."""
    return np.sqrt(np.maximum(((query[:, None, :] - bank[None, :, :]) ** 2).sum(-1), 0.0))


def training_references(shapes: np.ndarray, train_frames: int, gap: int) -> np.ndarray:
    """int64 [T]: for every frame i of the subject (shapes [T, 60]), the training frame
    r < train_frames nearest in mouth shape with |r - i| > gap. Validation frames (i >=
    train_frames) thus take theirs from the training frames only."""
    t = len(shapes)
    bank = shapes[:train_frames]
    out = np.zeros(t, np.int64)
    for start in range(0, t, 256):                       # [256, M] distance blocks
        rows = np.arange(start, min(start + 256, t))
        d = _distances(shapes[rows], bank)
        near = np.abs(rows[:, None] - np.arange(train_frames)[None, :]) <= gap
        d = np.where(near, np.inf, d)
        if not np.all(np.isfinite(d.min(axis=1))):
            raise ValueError(f"no training frame is more than {gap} frames from every frame: "
                             f"{train_frames} training frames are too few for the gap")
        out[rows] = np.argmin(d, axis=1)
    return out


def choose_references(query: np.ndarray, bank: np.ndarray,
                      hysteresis: float = DEFAULT_HYSTERESIS, previous: int | None = None
                      ) -> np.ndarray:
    """int64 [N]: the bank entry (row of bank [M, 60]) for each of N consecutive query mouths
    [N, 60]: the nearest, except that the previous frame's choice is kept while its distance is
    within (1 + hysteresis) of the nearest (plus a hair, so an exact tie never switches).
    previous: the choice before the first query (streaming in chunks)."""
    d = _distances(np.asarray(query, np.float64), np.asarray(bank, np.float64))
    out = np.zeros(len(d), np.int64)
    for k, row in enumerate(d):
        best = int(np.argmin(row))
        if previous is not None and row[previous] <= (1.0 + hysteresis) * row[best] + 1e-12:
            best = previous
        out[k] = previous = best
    return out


class ReferenceCrops:
    """Random access to a subject's stored face crops, uint8 [S, S, 3] by frame index, through
    its target-video shards (train then validation split, in time order), with the last
    `keep` crops cached."""

    def __init__(self, tfds_dir: str, keep: int = 64):
        from metatalk_jax.data_pipelines.subject_frames import open_target_source
        self.splits = [open_target_source(tfds_dir, split) for split in ("train", "validation")]
        self.keep = int(keep)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(s) for s in self.splits)

    @property
    def train_frames(self) -> int:
        """Frames of the training split (the first ones): the inference bank."""
        return len(self.splits[0])

    def __getitem__(self, frame: int) -> np.ndarray:
        from metatalk_jax.data_pipelines.subject_frames import decode_image
        frame = int(frame)
        if frame in self._cache:
            self._cache.move_to_end(frame)
            return self._cache[frame]
        index, split = frame, 0
        while index >= len(self.splits[split]):
            index -= len(self.splits[split])
            split += 1
        record = self.splits[split][index]
        if int(record["frame_index"]) != frame:
            raise ValueError(f"shard record {index} of split {split} is frame "
                             f"{int(record['frame_index'])}, expected {frame}")
        crop = decode_image(record["face_crop"], "face_crop")
        self._cache[frame] = crop
        if len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return crop

    def take(self, frames) -> np.ndarray:
        """uint8 [N, S, S, 3] crops of frames [N]."""
        return np.stack([self[f] for f in frames])


class StoredReferenceCrops:
    """The training frames' crops held in one array (a talker bundle's references.npz, see
    inference/talker_bundle.py): the same access as ReferenceCrops."""

    def __init__(self, crops: np.ndarray):
        self.crops = np.asarray(crops, np.uint8)

    @property
    def train_frames(self) -> int:
        return int(len(self.crops))

    def __getitem__(self, frame: int) -> np.ndarray:
        return self.crops[int(frame)]

    def take(self, frames) -> np.ndarray:
        return self.crops[np.asarray(frames, np.int64)]


def reference_crops(subject) -> "ReferenceCrops | StoredReferenceCrops":
    """The subject's mouth-reference bank: its stored crops when the subject directory holds
    them (a bundle's references.npz), else its target-video shards."""
    import os

    from metatalk_jax.subject.layout import REFERENCES_NPZ
    path = os.path.join(subject.path, REFERENCES_NPZ)
    if not os.path.isfile(path):
        return ReferenceCrops(subject.tfds_dir)
    with np.load(path) as data:
        return StoredReferenceCrops(data["crops"])
