"""The 3D morphable face model as a JAX pytree, and its one on-disk format (.npz).

Every model source (BFM2009 originals, Deep3DFaceRecon's BFM_model_front.mat, the offline
BFM-derived model, the procedural test model) is converted into this one structure, saved
with `save_npz` and read back with `load_npz`; the rest of the project only sees this.

Units: geometry in "model units" (BFM micrometres times the convention's scale: 1/92156.7 for
AudioDVP, 1/1e5 for Deep3DFaceRecon); albedo in [0, 1] (linear RGB as BFM stores it / 255).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.atomic_files import write_npz
from metatalk_jax.errors import InputError, MissingInputError

FORMAT_VERSION = 1

# Conventions differ in scale/recentring (applied when the model is built) and in how the
# 27 SH lighting coefficients are laid out and offset (applied at shading time).
CONVENTIONS = {
    # AudioDVP: gamma reshaped [9, 3] (band-major), +0.7 on the DC band of every channel.
    "audiodvp": {"scale": 1.0 / 92156.7, "recentre": False, "sh_layout": "9x3", "init_light": 0.7},
    # Deep3DFaceRecon: gamma reshaped [3, 9] (channel-major), +0.8 on the DC band.
    "deep3d": {"scale": 1.0 / 1e5, "recentre": True, "sh_layout": "3x9", "init_light": 0.8},
}

_ARRAY_FIELDS = (
    "mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis", "triangles",
    "point_buf", "landmark_ids", "mouth_triangle_ids", "face_mask", "skin_mask",
)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class MorphableModel:
    """A linear 3D face model.

    Attributes (V vertices, F triangles):
      mean_shape:  [V, 3] float32, model units.
      id_basis:    [V, 3, K_id] float32; identity coefficients are unit-variance.
      exp_basis:   [V, 3, K_exp] float32; expression coefficients are unit-variance.
      mean_albedo: [V, 3] float32 in [0, 1].
      tex_basis:   [V, 3, K_tex] float32 (K_tex = 0 when the model has no texture basis).
      triangles:   [F, 3] int32 vertex ids.
      point_buf:   [V, P] int32, the triangles around each vertex, padded with F (which indexes
                   an all-zero normal appended at shading time).
      landmark_ids: [68] int32 vertex ids of the iBUG-68 landmarks.
      mouth_triangle_ids: [M] int32 ids into `triangles` of the lower-face (mouth-region) set.
      face_mask:   [V] float32 in {0, 1}: the region used for photometric losses.
      skin_mask:   [V] float32 in {0, 1}: skin only (no brows, eyes, lips), for albedo priors.
      convention:  static; key of CONVENTIONS ("audiodvp" or "deep3d").
      name:        static; where the model came from.
    """

    mean_shape: Any
    id_basis: Any
    exp_basis: Any
    mean_albedo: Any
    tex_basis: Any
    triangles: Any
    point_buf: Any
    landmark_ids: Any
    mouth_triangle_ids: Any
    face_mask: Any
    skin_mask: Any
    convention: str = "audiodvp"
    name: str = "unnamed"

    # -- pytree protocol: arrays are leaves, convention/name are static metadata --------------
    def tree_flatten(self):
        return tuple(getattr(self, f) for f in _ARRAY_FIELDS), (self.convention, self.name)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, convention=aux[0], name=aux[1])

    # -- convenience ---------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def num_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def dims(self) -> dict:
        """Coefficient sizes: {'id': K_id, 'exp': K_exp, 'tex': K_tex}."""
        return {"id": int(self.id_basis.shape[-1]), "exp": int(self.exp_basis.shape[-1]),
                "tex": int(self.tex_basis.shape[-1])}

    @property
    def conv(self) -> dict:
        return CONVENTIONS[self.convention]

    @property
    def mouth_triangles(self):
        """[M, 3] int32 vertex ids of the mouth-region triangles."""
        return self.triangles[self.mouth_triangle_ids]

    def as_jax(self) -> "MorphableModel":
        """Same model with every array a jax array (float32 / int32)."""
        return jax.tree_util.tree_map(jnp.asarray, self)

    def replace(self, **changes) -> "MorphableModel":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "MorphableModel":
        """Checks shapes, dtypes and index ranges; raises ValueError naming the first problem."""
        v = self.num_vertices
        f = self.num_triangles
        expect = {
            "mean_shape": (v, 3), "mean_albedo": (v, 3), "face_mask": (v,), "skin_mask": (v,),
            "landmark_ids": (68,),
        }
        for field, shape in expect.items():
            got = tuple(np.shape(getattr(self, field)))
            if got != shape:
                raise ValueError(f"MorphableModel.{field} has shape {got}, expected {shape}")
        for field in ("id_basis", "exp_basis", "tex_basis"):
            got = tuple(np.shape(getattr(self, field)))
            if len(got) != 3 or got[:2] != (v, 3):
                raise ValueError(f"MorphableModel.{field} has shape {got}, expected ({v}, 3, K)")
        tri = np.asarray(self.triangles)
        if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= v:
            raise ValueError(f"MorphableModel.triangles must be [F,3] ids in [0,{v}), got "
                             f"shape {tri.shape} range [{tri.min()}, {tri.max()}]")
        pb = np.asarray(self.point_buf)
        if pb.ndim != 2 or pb.shape[0] != v or pb.min() < 0 or pb.max() > f:
            raise ValueError(f"MorphableModel.point_buf must be [V,P] ids in [0,{f}] (F pads)")
        lm = np.asarray(self.landmark_ids)
        if lm.min() < 0 or lm.max() >= v:
            raise ValueError("MorphableModel.landmark_ids out of range")
        mt = np.asarray(self.mouth_triangle_ids)
        if mt.ndim != 1 or (mt.size and (mt.min() < 0 or mt.max() >= f)):
            raise ValueError("MorphableModel.mouth_triangle_ids must be [M] ids into triangles")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"unknown convention {self.convention!r}; one of {list(CONVENTIONS)}")
        return self


def build_point_buf(triangles: np.ndarray, num_vertices: int, width: int = 8) -> np.ndarray:
    """The triangles around each vertex, padded with F: [V, width] int32.

    Vertices with more than `width` adjacent triangles keep the first `width` (BFM's own
    point_buf has at most 8; a regular triangulation has 6).
    """
    triangles = np.asarray(triangles, np.int64)
    f = triangles.shape[0]
    vert = triangles.reshape(-1)
    tri = np.repeat(np.arange(f), 3)
    order = np.argsort(vert, kind="stable")
    vert, tri = vert[order], tri[order]
    start = np.searchsorted(vert, np.arange(num_vertices))
    rank = np.arange(vert.size) - start[vert]
    keep = rank < width
    buf = np.full((num_vertices, width), f, np.int32)
    buf[vert[keep], rank[keep]] = tri[keep]
    return buf


def apply_convention(mean_shape_raw: np.ndarray, bases_raw: dict, convention: str):
    """Scales raw BFM-unit geometry (micrometres) and recentres it as the convention says.

    Args:
      mean_shape_raw: [V, 3] in BFM units.
      bases_raw: name -> [V, 3, K] geometry bases in BFM units per unit coefficient.
    Returns:
      (mean_shape [V,3] float32, {name: [V,3,K] float32}).
    """
    c = CONVENTIONS[convention]
    mean = np.asarray(mean_shape_raw, np.float64) * c["scale"]
    if c["recentre"]:
        mean = mean - mean.mean(axis=0, keepdims=True)
    bases = {k: (np.asarray(b, np.float64) * c["scale"]).astype(np.float32)
             for k, b in bases_raw.items()}
    return mean.astype(np.float32), bases


# -- .npz I/O ---------------------------------------------------------------------------------

def save_npz(model: MorphableModel, path: str) -> str:
    """Writes the model to `path` atomically (temporary name, then rename). Returns path."""
    model.validate()
    arrays = {f: np.asarray(getattr(model, f)) for f in _ARRAY_FIELDS}
    meta = {"format_version": FORMAT_VERSION, "convention": model.convention, "name": model.name}
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return write_npz(path, **arrays)


def load_npz(path: str) -> MorphableModel:
    """Reads a model written by `save_npz` (numpy arrays; call `.as_jax()` for device arrays).

    Raises ValueError with the file name for a missing field or a newer format version.
    """
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: morphable model file not found")
    with np.load(path, allow_pickle=False) as data:
        missing = [f for f in _ARRAY_FIELDS + ("meta_json",) if f not in data.files]
        if missing:
            raise InputError(f"{path}: not a metatalk_jax morphable model (missing {missing})")
        meta = json.loads(bytes(data["meta_json"]).decode())
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise InputError(f"{path}: model format {meta['format_version']} is newer than this "
                             f"metatalk_jax understands ({FORMAT_VERSION})")
        fields = {f: np.array(data[f]) for f in _ARRAY_FIELDS}
    float_fields = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis",
                    "face_mask", "skin_mask")
    for f in _ARRAY_FIELDS:
        fields[f] = fields[f].astype(np.float32 if f in float_fields else np.int32)
    model = MorphableModel(**fields, convention=meta["convention"], name=meta["name"])
    return model.validate()
