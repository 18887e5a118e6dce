"""Per-frame quality of a 3DMM fit: landmark reprojection error and photometric RMSE.

Landmark error is measured in the original frame's pixels (mean Euclidean distance over the 68
points between the fitted model's projected landmarks and the tracked ones) and as a percentage
of the inter-ocular distance (outer eye corners 36 and 45 of the tracked landmarks, the usual
normaliser of 68-point landmark errors). Photometric RMSE is over the rendered face region of the
fit-size crop, in 8-bit intensity levels.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.fixed_batches import index_batches
from metatalk_jax.recon.fit import (FRAME_KEYS, FitResult, VideoTarget, landmark_points,
                                    render_fit)


class FitReport(NamedTuple):
    """landmark_error_px [T], landmark_error_iod [T] (percent), photometric_rmse [T] (levels)."""

    landmark_error_px: np.ndarray
    landmark_error_iod: np.ndarray
    photometric_rmse: np.ndarray

    def summary(self) -> dict:
        def stats(x):
            return {"mean": float(np.mean(x)), "median": float(np.median(x)),
                    "max": float(np.max(x)), "worst_frame": int(np.argmax(x))}
        return {"landmark_error_px": stats(self.landmark_error_px),
                "landmark_error_iod_percent": stats(self.landmark_error_iod),
                "photometric_rmse_levels": stats(self.photometric_rmse)}


def inter_ocular_distance(landmarks: np.ndarray) -> np.ndarray:
    """[T, 68, 2] -> [T] distance between the outer eye corners (points 36 and 45)."""
    return np.linalg.norm(landmarks[:, 36] - landmarks[:, 45], axis=-1)


def fit_report(model, target: VideoTarget, fit: FitResult, *, chunk_size: int = 16,
               progress=None) -> FitReport:
    """Evaluates a fit on every frame (rendering chunk by chunk); `progress` (e.g. a
    metatalk_jax.progress.Progress; the caller closes it) gets update(n) per chunk of n frames."""
    model = model.as_jax()
    shared = {"identity": jnp.asarray(fit.identity), "texture": jnp.asarray(fit.texture),
              "albedo_offset": jnp.asarray(fit.albedo) - model.mean_albedo}
    camera = target.camera
    size = camera.height

    # The model and the shared parameters are arguments, not captured constants (see
    # recon.fit.AdamLoop): a small program, and one cache entry for subjects of one shape.
    @jax.jit
    def evaluate(model, shared, frames, screen, crops):
        lm = landmark_points(model, shared, frames, camera)           # frame pixels
        image, region, _ = render_fit(model, shared, frames, camera, screen)
        sq = jnp.sum(region[..., None] * (image - crops) ** 2, axis=(1, 2, 3))
        rmse = 255.0 * jnp.sqrt(sq / (3.0 * jnp.sum(region, axis=(1, 2)) + 1e-6))
        return lm, rmse

    t = len(target.landmarks)
    lm_err = np.zeros(t, np.float32)
    rmse = np.zeros(t, np.float32)
    params = fit.frame_params()
    for real, index in index_batches(t, chunk_size):
        frames = {k: jnp.asarray(params[k][index]) for k in FRAME_KEYS}
        screen = jnp.asarray(target.boxes.take(index).screen_transform(size))
        crops = jnp.asarray(np.asarray(target.crops[index], np.float32) / 255.0)
        lm, err = evaluate(model, shared, frames, screen, crops)
        n = len(real)
        dist = np.linalg.norm(np.asarray(lm[:n]) - target.landmarks[real], axis=-1)
        lm_err[real] = dist.mean(-1)
        rmse[real] = np.asarray(err[:n])
        if progress is not None:
            progress.update(n)
    iod = inter_ocular_distance(np.asarray(target.landmarks))
    return FitReport(lm_err, 100.0 * lm_err / np.maximum(iod, 1e-6), rmse)
