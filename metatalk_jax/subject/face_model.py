"""The subject's own face model and 3D camera, for stages that re-render the fitted face.

Training the renderer and inference render the 3DMM from per-frame coefficients. They need the
morphable model `prepare` fitted with (identified by the SHA-256 in subject.json), with the
subject's identity and albedo folded in, and the video's 3D camera from crops.npz.
"""

from __future__ import annotations

import os

import numpy as np

from metatalk_jax.checksums import file_sha256
from metatalk_jax.errors import InputError
from metatalk_jax.face3d.geometry import PinholeCamera
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.subject.layout import Subject

PROCEDURAL = "procedural"   # model_path naming the procedural test model


def load_morphable(path: str | None):
    """(model, sha256, file name): the .npz at `path`, or the cached offline model for None."""
    from metatalk_jax.face3d import assets
    from metatalk_jax.face3d.morphable import load_npz
    if path is None:
        path = assets.ensure_offline_model("audiodvp")
    elif not os.path.isfile(path):
        raise InputError(f"{path}: model file not found")
    return load_npz(path), file_sha256(path), os.path.basename(path)


def prepared_morphable(subject: Subject, model_path: str | None = None) -> MorphableModel:
    """The morphable model `subject` was prepared with, as loaded (bases intact).

    model_path: the .npz `prepare` used; None = the cached offline model; "procedural" = the
    procedural test model (face3d.procedural, for subjects made by tests). subject.json names
    the model and its SHA-256: a subject prepared with another model than the offline one needs
    its path, and a model whose SHA-256 differs is a ValueError naming both.
    """
    expected = subject.meta.get("model", {})
    if model_path is None and expected.get("name") and not expected["name"].startswith("offline"):
        raise InputError(f"{subject.path}: prepared with the model {expected['name']}; "
                         "pass its .npz (--config.data.model=PATH)")
    if model_path == PROCEDURAL:
        from metatalk_jax.face3d.procedural import procedural_model
        model, sha, name = procedural_model(), None, PROCEDURAL
    else:
        model, sha, name = load_morphable(model_path)
    if expected.get("sha256") and sha != expected["sha256"]:
        raise InputError(f"{model_path or name}: not the model {subject.path} was prepared with "
                         f"({expected.get('name')}, sha256 {expected['sha256'][:12]}...)")
    return model


def subject_face_model(subject: Subject, model_path: str | None = None) -> MorphableModel:
    """The subject's model: identity folded into the mean shape and the fitted albedo as the
    mean albedo (no identity or texture basis left), float32 numpy arrays.

    model_path: as `prepared_morphable`, which checks it against subject.json.
    """
    coeffs = subject.coefficients
    return folded_face_model(prepared_morphable(subject, model_path), coeffs["identity"],
                             coeffs["albedo"])


def folded_face_model(model: MorphableModel, identity, albedo) -> MorphableModel:
    """`model` with a fitted identity [K_id] folded into its mean shape and a fitted per-vertex
    albedo [V, 3] (in [0, 1], texture basis already applied) as its mean albedo; no identity or
    texture basis is left, so the coefficients that render it carry empty identity/texture
    vectors. float32 numpy arrays (call .as_jax() to render on device)."""
    identity = np.asarray(identity, np.float32)
    shape = np.asarray(model.mean_shape, np.float32) + np.asarray(model.id_basis) @ identity
    empty = np.zeros((model.num_vertices, 3, 0), np.float32)
    return model.replace(mean_shape=shape.astype(np.float32), id_basis=empty,
                         mean_albedo=np.asarray(albedo, np.float32), tex_basis=empty)


def subject_camera(subject: Subject, resolution: int) -> PinholeCamera:
    """The video's 3D camera (frame pixels) rasterizing at resolution x resolution: used with
    per-frame screen transforms that map frame pixels into each crop."""
    fx, fy, cx, cy, distance = (float(v) for v in subject.crops["camera"])
    return PinholeCamera(fx, fy, cx, cy, distance, int(resolution), int(resolution))
