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

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metatalk_jax.face3d import geometry, raster, shading
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.face3d.render import FaceCoeffs, landmark_ids_for, project_to_screen
from metatalk_jax.fixed_batches import index_batches
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


def render_fit(model: MorphableModel, shared: dict, frames: dict, camera, screen_transform,
               triangle_id=None):
    """Renders frames' crops for fitting: (image [B,S,S,3], face region [B,S,S], landmarks
    [B,68,2]). triangle_id: optional [B,S,S] visibility to reuse (`fit_visibility`).

    The same image as `render`, with two savings that matter when every frame is rendered and
    differentiated a few times: the colour and the face mask are interpolated in one pass, and
    no gradient flows into the shading normals through the mesh (the vertex-normal backward is
    a third of a step; expression changes tilt normals little, while pose still rotates them
    differentiably and geometry still moves every pixel through the rasterizer).
    """
    textured = textured_model(model, shared)
    coeffs = frame_coeffs(shared, frames)
    shape = geometry.face_shape(textured, coeffs.identity, coeffs.expression)
    normals = jax.lax.stop_gradient(geometry.vertex_normals(
        shape, model.triangles, model.point_buf, normalize_faces=model.convention == "deep3d"))
    verts, normals = geometry.apply_pose(shape, normals, coeffs.angles, coeffs.translation,
                                         model.convention)
    albedo = geometry.face_albedo(textured, coeffs.texture)
    conv = model.conv
    colours = shading.sh_shade(albedo, normals, coeffs.gamma, conv["sh_layout"],
                               conv["init_light"])
    pix = project_to_screen(camera, verts, screen_transform)
    if triangle_id is None:
        frags = raster.rasterize(pix, model.triangles, camera.image_size, perspective_correct=True)
    else:
        frags = raster.fragments_for(pix, model.triangles, triangle_id, perspective_correct=True)
    face = jnp.broadcast_to(model.face_mask[None, :, None], colours.shape[:2] + (1,))
    both = raster.interpolate(jnp.concatenate([colours, face], -1), model.triangles, frags)
    image = jnp.clip(both[..., :3], 0.0, 1.0)
    region = raster.coverage_alpha(frags) * both[..., 3]
    return image, region, pix[:, landmark_ids_for(model, camera), :2]


def fit_visibility(model: MorphableModel, shared: dict, frames: dict, camera, screen_transform):
    """[B,S,S] visible triangle ids of the current fit (the rasterizer's no-gradient half)."""
    coeffs = frame_coeffs(shared, frames)
    shape = geometry.face_shape(model, coeffs.identity, coeffs.expression)
    verts, _ = geometry.apply_pose(shape, shape, coeffs.angles, coeffs.translation,
                                   model.convention)
    pix = project_to_screen(camera, verts, screen_transform)
    return raster.visible_triangles(pix, model.triangles, camera.image_size,
                                    perspective_correct=True)


# -- the optimiser ---------------------------------------------------------------------------

def _adam(learning_rates: dict, steps: int, params: dict):
    """Adam with one cosine-decayed learning rate per parameter group (a dict key)."""
    txs = {k: optax.adam(optax.cosine_decay_schedule(learning_rates[k], max(steps, 1), 0.1))
           for k in params}
    return optax.multi_transform(txs, {k: k for k in params})


class AdamLoop:
    """Minimises loss_fn(params, *data[, triangle_id]) with `steps` Adam steps.

    Compiled once per instance and reused for every call (stage C calls it once per chunk).
    Steps run inside jit-compiled fori_loops of `segment` steps; between segments the progress
    bar advances and, when `visibility_fn(params, *data) -> [B,S,S] triangle ids` is given, the
    visibility is recomputed and passed to the loss as its last argument: the fit moves the
    face by fractions of a pixel per step, and the no-gradient visibility pass is about a third
    of a rendered step, so it need not run at every step.

    The morphable model travels in `data` (the stages pass it first), not in loss_fn's closure:
    an array a jitted function captures is a constant of its program, tens of MB of HLO to
    compile and hash, in every persistent-cache entry, and a subject's folded model is a new
    constant (a cache miss) for every video.
    """

    def __init__(self, loss_fn: Callable, learning_rates: dict, steps: int, keys, *,
                 segment: int = 0, visibility_fn: Callable | None = None):
        self.steps = steps
        self.segment = steps if segment <= 0 else min(segment, steps)
        self.tx = _adam(learning_rates, steps, {k: None for k in keys})
        self.visibility = None if visibility_fn is None else jax.jit(visibility_fn)
        tx = self.tx

        @jax.jit
        def run(p, state, data, n, lr_scale):
            def body(_, carry):
                p, state, _ = carry
                value, grads = jax.value_and_grad(loss_fn)(p, *data)
                updates, state = tx.update(grads, state, p)
                updates = jax.tree_util.tree_map(lambda u: lr_scale * u, updates)
                return optax.apply_updates(p, updates), state, value
            return jax.lax.fori_loop(0, n, body, (p, state, jnp.zeros((), jnp.float32)))

        self._run = run

    def __call__(self, params: dict, data: tuple, *, lr_scale: float = 1.0, progress=None):
        """Returns (params, last loss value)."""
        state = self.tx.init(params)
        done, value = 0, jnp.nan
        while done < self.steps:
            n = min(self.segment, self.steps - done)
            extra = () if self.visibility is None else (self.visibility(params, *data),)
            params, state, value = self._run(params, state, data + extra, n,
                                             jnp.float32(lr_scale))
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

    def loss_fn(p, model, goal, units):
        pred = landmark_points(model, p, p, target.camera, units)
        reg = losses.coefficient_regularization(weights, p["identity"], p["expression"])
        return (weights.landmark * losses.landmark_loss(pred, goal, lw)
                + weights.regularization * reg)

    lrs = {k: config.lr[k] for k in params}
    loop = AdamLoop(loss_fn, lrs, config.landmark_steps, params,
                    segment=config.landmark_steps // 4)
    params, _ = loop(params, (model, goal, units), progress=progress)
    shared = {"identity": params["identity"], "texture": jnp.zeros(d["tex"]),
              "albedo_offset": jnp.zeros((model.num_vertices, 3))}
    frames = {"expression": params["expression"], "angles": params["angles"],
              "translation": params["translation"], "gamma": jnp.zeros((t, 27))}
    return shared, frames


def _photometric_loss_fn(camera, weights: losses.LossWeights, with_shared: bool):
    lw = jnp.asarray(losses.landmark_weights(weights))

    def loss_fn(p, model, shared_fixed, crops, goal, screen, units, frame_mask,
                triangle_id=None):
        use_basis = has_texture_basis(model)
        shared = {k: p[k] if k in p else shared_fixed[k] for k in SHARED_KEYS}
        frames = {k: p[k] for k in FRAME_KEYS}
        image, region, _ = render_fit(model, shared, frames, camera, screen, triangle_id)
        photo = losses.photometric_loss(image, crops, region, frame_mask)
        pred = landmark_points(model, shared, frames, camera, units)
        lmk = losses.landmark_loss(pred, goal, lw, frame_mask)
        reg = losses.coefficient_regularization(
            weights, shared["identity"], frames["expression"],
            shared["texture"] if use_basis else None, frame_mask)
        total = (weights.photometric * photo + weights.landmark * lmk
                 + weights.regularization * reg)
        if with_shared and not use_basis:
            total = total + weights.albedo * jnp.mean(shared["albedo_offset"] ** 2)
        return total

    return loss_fn


def _refresh(config) -> int:
    """Steps between visibility updates (config.visibility_refresh; 1 = every step)."""
    return max(1, int(config.get("visibility_refresh", 1)))


def _visibility_fn(camera):
    """visibility_fn for AdamLoop: the shared parameters come from p (stage B) or from the
    fixed shared dict (stage C), as in the photometric loss."""
    def visibility(p, model, shared_fixed, crops, goal, screen, *rest):
        shared = {k: p[k] if k in p else shared_fixed[k] for k in SHARED_KEYS}
        return fit_visibility(model, shared, {k: p[k] for k in FRAME_KEYS}, camera, screen)
    return visibility


def _chunk_data(target: VideoTarget, index: np.ndarray, fit_size: int):
    """Data for the frames `index`: (crops [n,S,S,3] in [0,1], landmark goals in 256-units,
    screen transforms at S, landmark-unit transforms)."""
    boxes = target.boxes.take(index)
    units = _landmark_units(boxes)
    crops = np.asarray(target.crops[index], np.float32) / 255.0
    goal = (np.einsum("bij,bnj->bni", units[:, :, :2], target.landmarks[index])
            + units[:, None, :, 2])
    return (jnp.asarray(crops), jnp.asarray(goal, jnp.float32),
            jnp.asarray(boxes.screen_transform(fit_size)), jnp.asarray(units))


def key_frame_indices(num_frames: int, config) -> np.ndarray:
    """Stage B's key frames, spread evenly: one per `key_frame_spacing` frames (a second of
    video by default), between 4 and `key_frames` (a short clip's frames are too alike to need
    24; a long video's identity is well determined by 24 spread over it)."""
    spacing = max(1, int(config.get("key_frame_spacing", 1)))
    wanted = min(int(config.key_frames), max(4, math.ceil(num_frames / spacing)), num_frames)
    return np.unique(np.linspace(0, num_frames - 1, wanted).round().astype(int))


def fit_shared(model, target: VideoTarget, shared: dict, frames: dict, config,
               weights: losses.LossWeights, progress=None) -> tuple[dict, np.ndarray, dict]:
    """Stage B: shared identity/texture (or albedo) on key frames.

    Returns (shared, key frame indices [K], the key frames' fitted per-frame parameters)."""
    t = len(target.landmarks)
    keys = key_frame_indices(t, config)
    fit_size = target.camera.height
    crops, goal, screen, units = _chunk_data(target, keys, fit_size)
    frame_mask = jnp.ones(len(keys))
    p = {k: frames[k][keys] for k in FRAME_KEYS}
    p.update({"identity": shared["identity"]})
    p["texture" if has_texture_basis(model) else "albedo_offset"] = (
        shared["texture"] if has_texture_basis(model) else shared["albedo_offset"])
    loss_fn = _photometric_loss_fn(target.camera, weights, with_shared=True)
    lrs = {k: config.lr[k] for k in p}
    # Exact visibility at every step here: identity and albedo start far from the answer and
    # the key frames move by more than a pixel (reusing it measured 2 levels worse RMSE).
    loop = AdamLoop(loss_fn, lrs, config.shared_steps, p,
                    segment=max(1, config.shared_steps // 10))
    p, _ = loop(p, (model, shared, crops, goal, screen, units, frame_mask), progress=progress)
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
    loss_fn = _photometric_loss_fn(target.camera, weights, with_shared=False)
    lrs = {k: config.lr[k] for k in FRAME_KEYS}
    loop = AdamLoop(loss_fn, lrs, config.frame_steps, FRAME_KEYS, segment=_refresh(config),
                    visibility_fn=_visibility_fn(target.camera))

    result = {k: np.zeros(frames[k].shape, np.float32) for k in FRAME_KEYS}
    correction = {k: jnp.zeros(frames[k].shape[1:])
                  for k in ("expression", "angles", "translation")}
    gamma = jnp.mean(key_frames["gamma"], 0)
    for real, index in index_batches(t, size):
        frame_mask = jnp.asarray(np.arange(size) < len(real), jnp.float32)
        p = {k: frames[k][index] + correction[k] for k in correction}
        p["gamma"] = jnp.broadcast_to(gamma, (size, 27))
        crops, goal, screen, units = _chunk_data(target, index, fit_size)
        # Later chunks start next to a converged neighbour: smaller steps keep a fresh Adam
        # (full-size first steps) from knocking them off it.
        scale = 1.0 if real[0] == 0 else float(config.get("warm_lr_scale", 1.0))
        p, _ = loop(p, (model, shared, crops, goal, screen, units, frame_mask), lr_scale=scale)
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

    albedo = np.asarray(fold_shared(model, shared)[0].mean_albedo)   # basis or offset
    return FitResult(refined["expression"], refined["gamma"], refined["angles"],
                     refined["translation"], np.asarray(shared["identity"]),
                     np.asarray(shared["texture"]), albedo.astype(np.float32))


def _close(bar):
    if bar is not None and hasattr(bar, "close"):
        bar.close()
