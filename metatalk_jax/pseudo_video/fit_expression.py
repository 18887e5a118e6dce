"""Expression-only 3DMM fit on pseudo frames: everything but the expression is the source frame's.

A pseudo frame is the source frame with a new mouth, so the subject's identity, texture/albedo
(folded into the subject's face model), head pose (angles, translation) and SH lighting (gamma)
of the source frame stay FIXED and only the expression is optimised, warm-started from the
source frame's fitted expression. The loss is recon's: the photometric error over the rendered
face region (`recon.losses.photometric_loss` on `recon.fit.render_fit`) plus AudioDVP's
expression prior; frames are fitted in fixed-size batches (padding masked out), one jit'd
Adam loop compiled once (`recon.fit.AdamLoop`, visibility refreshed every few steps).

Landmarks: when the caller passes the pseudo frames' 68 landmarks (dlib's shape predictor on
the pasted frame, with the subject's tracked box: `PseudoFrameMaker` with a landmark backend,
configs/pseudo.py fit.landmarks), recon's weighted landmark loss is added (AudioDVP's weights:
brows, eyes and mouth 50, jaw and nose 1, in units of a 256 px crop). It moves the jaw and lips
directly, where the photometric term alone converges slowly (a smooth shaded surface changes little
per step): on a synthetic render of the tiny carphone subject, photometric-only fitting needed 120
Adam steps at lr 0.1 to cut the expression error to a third (tests/test_pseudo.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.fixed_batches import index_batches
from metatalk_jax.recon import losses
from metatalk_jax.recon.losses import LANDMARK_UNIT_RESOLUTION
from metatalk_jax.recon.fit import AdamLoop, fit_visibility, render_fit
from metatalk_jax.subject.conditioning import crop_renders
from metatalk_jax.subject.face_model import subject_camera, subject_face_model
from metatalk_jax.subject.layout import Subject

FIXED_KEYS = ("angles", "translation", "gamma")


def _folded_shared(model) -> dict:
    """Identity and albedo are folded into the subject's model: empty shared coefficients."""
    return {"identity": jnp.zeros(0), "texture": jnp.zeros(0),
            "albedo_offset": jnp.zeros((model.num_vertices, 3))}


class ExpressionFitter:
    """Fits expressions [n,E] to face crops at the subject's fit resolution S.

    steps: Adam steps per batch; batch: frames per compiled call; learning_rate: expression
    step size; visibility_refresh: steps between visibility updates; weights: recon LossWeights
    (photometric, regularization, expression used); model_path: the .npz prepare used (None =
    the offline model).
    """

    def __init__(self, subject: Subject, *, steps: int, batch: int, learning_rate: float,
                 visibility_refresh: int = 4, weights: losses.LossWeights | None = None,
                 model_path: str | None = None):
        if steps <= 0 or batch <= 0:
            raise InputError(f"fit steps and batch must be positive, got {steps} and {batch}")
        self.subject = subject
        self.resolution = int(subject.meta["fit_resolution"])
        self.batch = int(batch)
        weights = weights or losses.LossWeights()
        model = subject_face_model(subject, model_path).as_jax()
        self.model = model
        self.camera = subject_camera(subject, self.resolution)
        self.screens = subject.crop_boxes().screen_transform(self.resolution)
        coeffs = subject.coefficients
        self.source = {k: np.asarray(coeffs[k], np.float32)
                       for k in ("expression",) + FIXED_KEYS}
        camera = self.camera

        # Landmark distances in units of a 256 px crop of the same box, as in recon.
        unit = LANDMARK_UNIT_RESOLUTION / self.resolution
        landmark_w = jnp.asarray(losses.landmark_weights(weights))

        # The model is the loop's first datum, not a captured constant (recon.fit.AdamLoop).
        def loss_fn(p, model, fixed, crops, screen, frame_mask, goal, goal_mask,
                    triangle_id=None):
            shared = _folded_shared(model)
            frames = {"expression": p["expression"], **fixed}
            image, region, marks = render_fit(model, shared, frames, camera, screen, triangle_id)
            photo = losses.photometric_loss(image, crops, region, frame_mask)
            prior = losses.coefficient_regularization(weights, shared["identity"],
                                                      p["expression"], None, frame_mask)
            landmark = losses.landmark_loss(marks * unit, goal * unit, landmark_w,
                                            frame_mask * goal_mask)
            return (weights.photometric * photo + weights.regularization * prior
                    + weights.landmark * landmark)

        def visibility(p, model, fixed, crops, screen, frame_mask, goal, goal_mask):
            return fit_visibility(model, _folded_shared(model),
                                  {"expression": p["expression"], **fixed}, camera, screen)

        self._loop = AdamLoop(loss_fn, {"expression": float(learning_rate)}, int(steps),
                              ("expression",), segment=max(1, int(visibility_refresh)),
                              visibility_fn=visibility)

    def fit(self, crops: np.ndarray, source_frames: np.ndarray,
            start: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> np.ndarray:
        """crops uint8 [n,S,S,3] RGB (the pseudo frames' fit-resolution crops), source_frames
        [n] their subject frames -> float32 [n,E] expressions. start: optional [n,E] initial
        expressions (default: the source frames' fitted ones). landmarks: optional [n,68,2]
        landmarks of the crops in crop pixels (NaN rows: no landmarks for that frame)."""
        crops = np.asarray(crops)
        source_frames = np.asarray(source_frames, np.int64)
        n = len(crops)
        s = self.resolution
        if crops.shape[1:] != (s, s, 3) or len(source_frames) != n:
            raise ValueError(f"ExpressionFitter.fit: crops must be [n,{s},{s},3] with n source "
                             f"frames, got {crops.shape} and {source_frames.shape}")
        init = self.source["expression"][source_frames] if start is None else np.asarray(
            start, np.float32)
        if landmarks is None:
            landmarks = np.full((n, 68, 2), np.nan, np.float32)
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.shape != (n, 68, 2):
            raise ValueError(f"ExpressionFitter.fit: landmarks must be [{n},68,2], got "
                             f"{landmarks.shape}")
        has_marks = np.all(np.isfinite(landmarks), axis=(1, 2))
        landmarks = np.where(has_marks[:, None, None], landmarks, 0.0)
        out = np.zeros((n, init.shape[1]), np.float32)
        b = self.batch
        for real, index in index_batches(n, b):
            frames = source_frames[index]
            fixed = {k: jnp.asarray(self.source[k][frames]) for k in FIXED_KEYS}
            mask = jnp.asarray(np.arange(b) < len(real), jnp.float32)
            data = (self.model, fixed, jnp.asarray(crops[index], jnp.float32) / 255.0,
                    jnp.asarray(self.screens[frames]), mask, jnp.asarray(landmarks[index]),
                    jnp.asarray(has_marks[index], jnp.float32))
            params, _ = self._loop({"expression": jnp.asarray(init[index])}, data)
            out[real] = np.asarray(params["expression"][:len(real)])
        return out

    def render(self, expression: np.ndarray, source_frames: np.ndarray) -> np.ndarray:
        """uint8 [n,S,S,3] renders (black background) of `expression` [n,E] with the source
        frames' pose and lighting (previews): the subject drawn in its crop as training and
        inference draw it (`crop_renders`; the fit above differentiates `render_fit` instead)."""
        fixed = [self.source[k][source_frames] for k in ("gamma", "angles", "translation")]
        image = crop_renders(self.model, self.camera, np.asarray(expression, np.float32), *fixed,
                             self.screens[source_frames]).image
        return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
