"""The subject's own face model and 3D camera, for stages that re-render the fitted face.

Training the renderer and inference render the 3DMM from per-frame coefficients. They need the
morphable model `prepare` fitted with (identified by the SHA-256 in subject.json), with the
subject's identity and albedo folded in, and the video's 3D camera from crops.npz.
"""

from __future__ import annotations

import os

import numpy as np

from metatalk_jax.face3d.geometry import PinholeCamera
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.subject.layout import Subject


def load_morphable(path: str | None):
    """(model, sha256, file name): the .npz at `path`, or the cached offline model for None."""
    from metatalk_jax.face3d import assets
    from metatalk_jax.face3d.morphable import load_npz
    if path is None:
        path = assets.ensure_offline_model("audiodvp")
    elif not os.path.isfile(path):
        raise ValueError(f"{path}: model file not found")
    return load_npz(path), assets.sha256_of(path), os.path.basename(path)


def subject_face_model(subject: Subject, model_path: str | None = None) -> MorphableModel:
    """The subject's model: identity folded into the mean shape and the fitted albedo as the
    mean albedo (no identity or texture basis left), float32 numpy arrays.

    model_path: the .npz `prepare` used; None = the offline model. A different model than the
    one in subject.json (by SHA-256) is a ValueError naming both.
    """
    expected = subject.meta.get("model", {})
    if model_path is None and expected.get("name") and not expected["name"].startswith("offline"):
        raise ValueError(f"{subject.path}: prepared with the model {expected['name']}; "
                         "pass its .npz (--config.data.model=PATH)")
    model, sha, name = load_morphable(model_path)
    if expected.get("sha256") and sha != expected["sha256"]:
        raise ValueError(f"{model_path or name}: not the model {subject.path} was prepared with "
                         f"({expected.get('name')}, sha256 {expected['sha256'][:12]}...)")
    coeffs = subject.coefficients
    identity = np.asarray(coeffs["identity"], np.float32)
    shape = np.asarray(model.mean_shape, np.float32) + np.asarray(model.id_basis) @ identity
    empty = np.zeros((model.num_vertices, 3, 0), np.float32)
    return model.replace(mean_shape=shape.astype(np.float32), id_basis=empty,
                         mean_albedo=np.asarray(coeffs["albedo"], np.float32), tex_basis=empty)


def subject_camera(subject: Subject, resolution: int) -> PinholeCamera:
    """The video's 3D camera (frame pixels) rasterizing at resolution x resolution: used with
    per-frame screen transforms that map frame pixels into each crop."""
    fx, fy, cx, cy, distance = (float(v) for v in subject.crops["camera"])
    return PinholeCamera(fx, fy, cx, cy, distance, int(resolution), int(resolution))
