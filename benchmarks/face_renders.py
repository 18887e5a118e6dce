"""Inference's 3DMM draw (inference/pipeline.FaceRenders): its cost per frame and its parts,
each against the form it replaced, timed interleaved in one process.

On the carphone subject prepared as benchmarks/infer.py prepares it, one render batch (8 frames
at 256 px, the pipeline's default there) of the subject's own fitted expressions:
  draw            FaceRenders(...): renders, dilated mouth masks, openings (what infer runs);
  mouth_coverage  the mouth mask as raster.covered_pixels (one coverage sweep; what render uses)
  mouth_raster    the same mask as a full raster.rasterize(...).mask (the form before);
  visibility      raster.visible_triangles with the default tile (default_tile: 1 px here)
  visibility_t2   the same with 2-px tiles (the default before).
All outputs are checked equal pairwise first. Medians over --repeats, ms per frame.

Run from the repository root:  python benchmarks/face_renders.py [--resolution 256] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from metatalk_jax.runtime import start
    start()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.infer import bench_subject
    from benchmarks.interleaved import time_interleaved
    from benchmarks.machine_info import machine_description
    from metatalk_jax.face3d import raster
    from metatalk_jax.face3d.render import FaceCoeffs, posed_vertices, project_to_screen
    from metatalk_jax.inference.pipeline import FaceRenders
    from metatalk_jax.subject.face_model import subject_camera
    from metatalk_jax.subject.layout import load_subject

    r, b = args.resolution, args.batch
    subject = load_subject(bench_subject())
    faces = FaceRenders(subject, r, None, "mouth_cavity")
    c = faces.coefficients
    frames = np.arange(b) % len(c["expression"])
    expressions = c["expression"][frames]
    model, camera = faces._model, subject_camera(subject, r)
    empty = jnp.zeros((b, 0), jnp.float32)
    coeffs = FaceCoeffs(empty, jnp.asarray(expressions, jnp.float32), empty,
                        jnp.asarray(c["angles"][frames], jnp.float32),
                        jnp.asarray(c["translation"][frames], jnp.float32),
                        jnp.asarray(c["gamma"][frames], jnp.float32))
    screens = jnp.asarray(faces.screens[frames], jnp.float32)
    pixels = jax.jit(lambda co, st: project_to_screen(camera, posed_vertices(model, co)[0],
                                                      st))(coeffs, screens)
    size = (r, r)
    mouth_full = jax.jit(lambda p: raster.rasterize(p, model.mouth_triangles, size,
                                                    perspective_correct=True).mask)
    parts = {
        "draw": lambda: faces(expressions, frames),
        "mouth_coverage": lambda: raster.covered_pixels(pixels, model.mouth_triangles, size,
                                                        perspective_correct=True),
        "mouth_raster": lambda: mouth_full(pixels),
        "visibility": lambda: raster.visible_triangles(pixels, model.triangles, size,
                                                       perspective_correct=True),
        "visibility_t2": lambda: raster.visible_triangles(pixels, model.triangles, size,
                                                          perspective_correct=True, tile=2),
    }
    np.testing.assert_array_equal(np.asarray(parts["mouth_coverage"]()),
                                  np.asarray(parts["mouth_raster"]()))
    np.testing.assert_array_equal(np.asarray(parts["visibility"]()),
                                  np.asarray(parts["visibility_t2"]()))
    runners = [(name, (lambda f=f: jax.block_until_ready(f()))) for name, f in parts.items()]
    times, _ = time_interleaved(runners, warmup=1, repeats=args.repeats)
    ms = {name: 1000 * statistics.median(v) / b for name, v in times.items()}
    for name, value in ms.items():
        print(f"{name:>15}: {value:7.2f} ms per frame")
    result = {"bench": "face_renders", "machine": machine_description({}), "resolution": r,
              "batch": b, "tile": raster.default_tile(size, model.triangles.shape[0]),
              "ms_per_frame": {k: round(v, 2) for k, v in ms.items()},
              "mouth_coverage_over_raster": round(ms["mouth_coverage"] / ms["mouth_raster"], 3),
              "visibility_over_tile2": round(ms["visibility"] / ms["visibility_t2"], 3)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
