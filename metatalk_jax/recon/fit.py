"""Fitting a 3DMM to a tracked video: shared identity and texture, per-frame expression, pose
and SH lighting, by gradient descent through the differentiable renderer.

Three stages, each one jit-compiled loop:
  A. landmarks only, every frame at once: identity, expression and pose from the 68 tracked
     landmarks (only the 68 landmark vertices are formed, so thousands of frames cost little);
  B. photometric, on a few key frames spread over the video: the shared identity and texture
     (the texture basis when the model has one, otherwise a per-vertex albedo offset estimated
     from the video) together with those frames' expression, pose and lighting;
  C. photometric, every frame in chunks in time order with identity and texture fixed:
     expression, pose and lighting, each chunk warm-started from its neighbour (stage A's
     solution plus the previous chunk's mean correction, and its lighting).

Coordinates: landmarks and the camera are in frame pixels (continuous, pixel centres at +0.5);
each frame is rendered in its own crop through the crop module's screen transform, so a crop of
any size sees the face exactly where the frame has it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metatalk_jax.face3d import geometry, raster
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.face3d.render import FaceCoeffs, landmark_ids_for, project_to_screen, render
from metatalk_jax.recon import losses
from metatalk_jax.tracking.crop import CropBoxes

FRAME_KEYS = ("expression", "gamma", "angles", "translation")
SHARED_KEYS = ("identity", "texture", "albedo_offset")


class FitResult(NamedTuple):
    """A fitted video (numpy arrays).

    expression [T, E], gamma [T, 27], angles [T, 3] (rad), translation [T, 3] (model units);
    identity [I], texture [K] (K = 0 without a texture basis), albedo [V, 3] the per-vertex
    albedo the fit used (mean + basis x texture, or mean + estimated offset).
    """

    expression: np.ndarray
    gamma: np.ndarray
    angles: np.ndarray
    translation: np.ndarray
    identity: np.ndarray
    texture: np.ndarray
    albedo: np.ndarray

    def frame_params(self) -> dict:
        return {k: getattr(self, k) for k in FRAME_KEYS}


class VideoTarget(NamedTuple):
    """What the fit matches. landmarks [T, 68, 2] frame px; boxes: the crop boxes; crops
    [T, S, S, 3] uint8 face crops at the fit size S (array-like, may be a memmap);
    camera: the video's frame camera rasterizing at S (`crop.frame_camera(boxes, S)`)."""

    landmarks: np.ndarray
    boxes: CropBoxes
    crops: np.ndarray
    camera: geometry.PinholeCamera


def has_texture_basis(model: MorphableModel) -> bool:
    return model.tex_basis.shape[-1] > 0


def textured_model(model: MorphableModel, shared: dict) -> MorphableModel:
    """The model whose mean albedo includes the estimated per-vertex offset (models without a
    texture basis); unchanged when the model has a basis (the texture coefficients apply)."""
    if has_texture_basis(model):
        return model
    return model.replace(mean_albedo=model.mean_albedo + shared["albedo_offset"])


def fold_shared(model: MorphableModel, shared: dict) -> tuple[MorphableModel, dict]:
    """Bakes fixed identity and texture into the model's mean shape and albedo.

    Stage C keeps them fixed; folding them in once saves forming (and differentiating through)
    mean + basis x coefficients for every frame at every step. Returns the model with empty
    identity/texture bases and the matching shared dict (empty coefficient vectors)."""
    shape = model.mean_shape + jnp.einsum("vck,k->vc", model.id_basis, shared["identity"])
    albedo = textured_model(model, shared).mean_albedo
    if has_texture_basis(model):
        albedo = albedo + jnp.einsum("vck,k->vc", model.tex_basis, shared["texture"])
    folded = model.replace(mean_shape=shape, mean_albedo=albedo,
                           id_basis=model.id_basis[..., :0], tex_basis=model.tex_basis[..., :0])
    return folded, {"identity": jnp.zeros(0), "texture": jnp.zeros(0),
                    "albedo_offset": jnp.zeros_like(shared["albedo_offset"])}


def frame_coeffs(shared: dict, frames: dict) -> FaceCoeffs:
    """Shared + per-frame parameters -> FaceCoeffs with the frames' batch."""
    b = frames["expression"].shape[0]
    tile = lambda x: jnp.broadcast_to(x, (b,) + x.shape)  # noqa: E731
    return FaceCoeffs(tile(shared["identity"]), frames["expression"], tile(shared["texture"]),
                      frames["angles"], frames["translation"], frames["gamma"])


def landmark_points(model: MorphableModel, shared: dict, frames: dict,
                    camera: geometry.PinholeCamera, screen_transform=None):
    """[B, 68, 2] projected landmarks, forming only the 68 landmark vertices."""
    ids = landmark_ids_for(model, camera)
    shape = (model.mean_shape[ids][None]
             + jnp.einsum("lck,k->lc", model.id_basis[ids], shared["identity"])[None]
             + jnp.einsum("lck,bk->blc", model.exp_basis[ids], frames["expression"]))
    posed, _ = geometry.apply_pose(shape, shape, frames["angles"], frames["translation"],
                                   model.convention)
    return project_to_screen(camera, posed, screen_transform)[..., :2]


def render_fit(model: MorphableModel, shared: dict, frames: dict, camera, screen_transform):
    """Renders frames' crops: (image [B,S,S,3], face region [B,S,S], landmarks [B,68,2])."""
    out = render(textured_model(model, shared), frame_coeffs(shared, frames), camera,
                 with_mouth_mask=False, screen_transform=screen_transform)
    face = raster.interpolate(model.face_mask[:, None], model.triangles, out.fragments)[..., 0]
    return out.image, out.alpha * face, out.landmarks


# -- the optimiser ---------------------------------------------------------------------------

def _adam(learning_rates: dict, steps: int, params: dict):
    """Adam with one cosine-decayed learning rate per parameter group (a dict key)."""
    txs = {k: optax.adam(optax.cosine_decay_schedule(learning_rates[k], max(steps, 1), 0.1))
           for k in params}
    return optax.multi_transform(txs, {k: k for k in params})


def run_adam(loss_fn: Callable, params: dict, data: tuple, learning_rates: dict, steps: int,
             *, segment: int = 0, progress=None):
    """Minimises loss_fn(params, *data) with `steps` Adam steps; returns (params, last loss).

    The steps run inside one jit-compiled fori_loop per `segment` steps (all at once when 0),
    so the progress bar advances between segments without recompiling."""
    tx = _adam(learning_rates, steps, params)
    segment = steps if segment <= 0 else min(segment, steps)

    @jax.jit
    def run(p, state, data, n):
        def body(_, carry):
            p, state, _ = carry
            value, grads = jax.value_and_grad(loss_fn)(p, *data)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state, value
        return jax.lax.fori_loop(0, n, body, (p, state, jnp.zeros((), jnp.float32)))

    state = tx.init(params)
    done, value = 0, jnp.nan
    while done < steps:
        n = min(segment, steps - done)
        params, state, value = run(params, state, data, n)
        done += n
        if progress is not None:
            progress.update(n)
    return params, float(value)


# -- the stages ------------------------------------------------------------------------------

def initial_translation(boxes: CropBoxes, camera: geometry.PinholeCamera,
                        convention: str) -> np.ndarray:
    """[T, 3] translations that put the model origin at each box centre with the box's scale
    (camera at distance d on +z; AudioDVP's convention moves the face by -t)."""
    d = camera.distance
    depth = d * float(np.mean(boxes.sizes)) / boxes.sizes               # keeps face/box ratio
    x = (boxes.centers[:, 0] - camera.cx) * depth / camera.focal_x
    y = -(boxes.centers[:, 1] - camera.cy) * depth / camera.focal_y
    z = d - depth
    t = np.stack([x, y, z], -1).astype(np.float32)
    return -t if convention == "audiodvp" else t


def _landmark_units(boxes: CropBoxes) -> np.ndarray:
    """[T, 2, 3] screen transforms into a 256 px crop of each box (the landmark loss unit)."""
    return boxes.screen_transform(losses.LANDMARK_UNIT_RESOLUTION)


def _apply_affine(points, affine):
    return jnp.einsum("bij,bnj->bni", affine[:, :, :2], points) + affine[:, None, :, 2]


def fit_landmarks(model, target: VideoTarget, config, weights: losses.LossWeights,
                  progress=None) -> tuple[dict, dict]:
    """Stage A: identity, expression and pose of every frame from landmarks only."""
    t = len(target.landmarks)
    d = model.dims
    units = jnp.asarray(_landmark_units(target.boxes))
    goal = _apply_affine(jnp.asarray(target.landmarks, jnp.float32), units)
    lw = jnp.asarray(losses.landmark_weights(weights))
    params = {"identity": jnp.zeros(d["id"]), "expression": jnp.zeros((t, d["exp"])),
              "angles": jnp.zeros((t, 3)),
              "translation": jnp.asarray(initial_translation(target.boxes, target.camera,
                                                             model.convention))}

    def loss_fn(p, goal, units):
        pred = landmark_points(model, p, p, target.camera, units)
        reg = losses.coefficient_regularization(weights, p["identity"], p["expression"])
        return weights.landmark * losses.landmark_loss(pred, goal, lw) + weights.regularization * reg

    lrs = {k: config.lr[k] for k in params}
    params, _ = run_adam(loss_fn, params, (goal, units), lrs, config.landmark_steps,
                         segment=config.landmark_steps // 4, progress=progress)
    shared = {"identity": params["identity"], "texture": jnp.zeros(d["tex"]),
              "albedo_offset": jnp.zeros((model.num_vertices, 3))}
    frames = {"expression": params["expression"], "angles": params["angles"],
              "translation": params["translation"], "gamma": jnp.zeros((t, 27))}
    return shared, frames


def _photometric_loss_fn(model, camera, weights: losses.LossWeights, fit_shared: bool):
    lw = jnp.asarray(losses.landmark_weights(weights))
    use_basis = has_texture_basis(model)

    def loss_fn(p, shared_fixed, crops, goal, screen, units, frame_mask):
        shared = {k: p[k] if k in p else shared_fixed[k] for k in SHARED_KEYS}
        frames = {k: p[k] for k in FRAME_KEYS}
        image, region, _ = render_fit(model, shared, frames, camera, screen)
        photo = losses.photometric_loss(image, crops, region, frame_mask)
        pred = landmark_points(model, shared, frames, camera, units)
        lmk = losses.landmark_loss(pred, goal, lw, frame_mask)
        reg = losses.coefficient_regularization(
            weights, shared["identity"], frames["expression"],
            shared["texture"] if use_basis else None, frame_mask)
        total = (weights.photometric * photo + weights.landmark * lmk
                 + weights.regularization * reg)
        if fit_shared and not use_basis:
            total = total + weights.albedo * jnp.mean(shared["albedo_offset"] ** 2)
        return total

    return loss_fn


def _chunk_data(target: VideoTarget, index: np.ndarray, fit_size: int):
    """Data for the frames `index`: (crops [n,S,S,3] in [0,1], landmark goals in 256-units,
    screen transforms at S, landmark-unit transforms)."""
    boxes = target.boxes.take(index)
    units = _landmark_units(boxes)
    crops = np.asarray(target.crops[index], np.float32) / 255.0
    goal = np.einsum("bij,bnj->bni", units[:, :, :2], target.landmarks[index]) + units[:, None, :, 2]
    return (jnp.asarray(crops), jnp.asarray(goal, jnp.float32),
            jnp.asarray(boxes.screen_transform(fit_size)), jnp.asarray(units))


def fit_shared(model, target: VideoTarget, shared: dict, frames: dict, config,
               weights: losses.LossWeights, progress=None) -> tuple[dict, np.ndarray, dict]:
    """Stage B: shared identity/texture (or albedo) on key frames.

    Returns (shared, key frame indices [K], the key frames' fitted per-frame parameters)."""
    t = len(target.landmarks)
    keys = np.unique(np.linspace(0, t - 1, min(config.key_frames, t)).round().astype(int))
    fit_size = target.camera.height
    crops, goal, screen, units = _chunk_data(target, keys, fit_size)
    frame_mask = jnp.ones(len(keys))
    p = {k: frames[k][keys] for k in FRAME_KEYS}
    p.update({"identity": shared["identity"]})
    p["texture" if has_texture_basis(model) else "albedo_offset"] = (
        shared["texture"] if has_texture_basis(model) else shared["albedo_offset"])
    loss_fn = _photometric_loss_fn(model, target.camera, weights, fit_shared=True)
    lrs = {k: config.lr[k] for k in p}
    p, _ = run_adam(loss_fn, p, (shared, crops, goal, screen, units, frame_mask), lrs,
                    config.shared_steps, segment=max(1, config.shared_steps // 10),
                    progress=progress)
    out = dict(shared)
    out.update({k: p[k] for k in SHARED_KEYS if k in p})
    return out, keys, {k: p[k] for k in FRAME_KEYS}


def fit_frames(model, target: VideoTarget, shared: dict, frames: dict, key_frames: dict,
               config, weights: losses.LossWeights, progress=None) -> dict:
    """Stage C: every frame's expression, pose and lighting, chunk by chunk in time order."""
    t = len(target.landmarks)
    size = config.chunk_size
    fit_size = target.camera.height
    model, shared = fold_shared(model, shared)
    loss_fn = _photometric_loss_fn(model, target.camera, weights, fit_shared=False)
    lrs = {k: config.lr[k] for k in FRAME_KEYS}
    tx = _adam(lrs, config.frame_steps, {k: None for k in FRAME_KEYS})
    steps = config.frame_steps

    @jax.jit
    def refine(p, data):
        def body(_, carry):
            p, state = carry
            grads = jax.grad(loss_fn)(p, *data)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state
        return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]

    result = {k: np.zeros(frames[k].shape, np.float32) for k in FRAME_KEYS}
    correction = {k: jnp.zeros(frames[k].shape[1:]) for k in ("expression", "angles", "translation")}
    gamma = jnp.mean(key_frames["gamma"], 0)
    for start in range(0, t, size):
        real = np.arange(start, min(start + size, t))
        index = np.concatenate([real, np.full(size - len(real), real[-1])])  # pad the last chunk
        frame_mask = jnp.asarray(np.arange(size) < len(real), jnp.float32)
        p = {k: frames[k][index] + correction[k] for k in correction}
        p["gamma"] = jnp.broadcast_to(gamma, (size, 27))
        crops, goal, screen, units = _chunk_data(target, index, fit_size)
        p = refine(p, (shared, crops, goal, screen, units, frame_mask))
        n = len(real)
        for k in FRAME_KEYS:
            result[k][real] = np.asarray(p[k][:n])
        # Warm start for the next chunk: neighbouring frames share lighting and the
        # photometric correction to the landmark-only pose/expression changes slowly.
        correction = {k: jnp.mean(p[k][:n] - frames[k][real], 0) for k in correction}
        gamma = jnp.mean(p["gamma"][:n], 0)
        if progress is not None:
            progress.update(n)
    return result


def fit_video(model: MorphableModel, target: VideoTarget, config, *,
              progress_factory=None) -> FitResult:
    """Fits the model to a tracked, cropped video (the three stages above).

    config: ml_collections with landmark_steps, key_frames, shared_steps, chunk_size,
      frame_steps, lr (dict per parameter group) and optional loss weights (see LossWeights).
    progress_factory: optional callable(label, total) -> object with update(n)/close().
    """
    model = model.as_jax()
    weights = losses.LossWeights.from_config(config.get("weights", {}))
    make = progress_factory or (lambda label, total: None)
    t = len(target.landmarks)

    bar = make("fit landmarks (steps)", config.landmark_steps)
    shared, frames = fit_landmarks(model, target, config, weights, bar)
    _close(bar)
    bar = make("fit identity/texture (steps)", config.shared_steps)
    shared, _, key_frames = fit_shared(model, target, shared, frames, config, weights, bar)
    _close(bar)
    bar = make("fit frames", t)
    refined = fit_frames(model, target, shared, frames, key_frames, config, weights, bar)
    _close(bar)

    albedo = np.asarray(textured_model(model, shared).mean_albedo)
    if has_texture_basis(model):
        albedo = np.asarray(geometry.face_albedo(model, shared["texture"][None])[0])
    return FitResult(refined["expression"], refined["gamma"], refined["angles"],
                     refined["translation"], np.asarray(shared["identity"]),
                     np.asarray(shared["texture"]), albedo.astype(np.float32))


def _close(bar):
    if bar is not None and hasattr(bar, "close"):
        bar.close()
