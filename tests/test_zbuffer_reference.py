"""The numba z-buffer of benchmarks/ agrees with the JAX rasterizer, so the benchmark compares like
with like (same pixel centres, inside rule, winding and depth order)."""

import numpy as np

from benchmarks.rasterize import calibrate_scale, place
from benchmarks.zbuffer_reference import zbuffer_reference
from metatalk_jax.face3d import raster
from metatalk_jax.face3d.procedural import procedural_model
from tests.support.raster_reference import brute_force_rasterize


def _random_triangles(rng, num_tris, height, width, spread):
    """Independent triangles (own vertices) scattered over the image, random size, depth,
    winding."""
    centres = rng.uniform([0.0, 0.0], [width, height], size=(num_tris, 1, 2))
    xy = centres + rng.normal(size=(num_tris, 3, 2)) * rng.uniform(*spread, size=(num_tris, 1, 1))
    z = rng.uniform(1.0, 5.0, size=(num_tris, 1, 1)) + 0.3 * rng.normal(size=(num_tris, 3, 1))
    verts = np.concatenate([xy, z], -1).reshape(-1, 3).astype(np.float32)
    return verts, np.arange(3 * num_tris, dtype=np.int32).reshape(-1, 3)


def _agreement(a, b):
    fg = (a >= 0) | (b >= 0)
    return float(np.mean(a[fg] == b[fg])), int(fg.sum())


def test_matches_brute_force_exactly_on_a_small_mesh():
    rng = np.random.default_rng(1)
    verts, faces = _random_triangles(rng, 60, 24, 32, (1.0, 8.0))
    tid, depth = zbuffer_reference(verts, faces, 24, 32)
    ref_tid, ref_depth, _ = brute_force_rasterize(verts, faces, 24, 32)
    assert tid.dtype == np.int32 and depth.dtype == np.float32 and tid.shape == (24, 32)
    agree, n = _agreement(tid, ref_tid)
    assert n > 200 and agree >= 0.999, agree
    same = (tid == ref_tid) & (tid >= 0)
    np.testing.assert_allclose(depth[same], ref_depth[same], rtol=1e-5, atol=1e-5)
    assert np.all(depth[tid < 0] == 0)


def test_agrees_with_jax_rasterizer_on_a_random_mesh():
    rng = np.random.default_rng(0)
    height, width = 96, 128
    small, small_f = _random_triangles(rng, 1500, height, width, (0.3, 6.0))
    big, big_f = _random_triangles(rng, 10, height, width, (20.0, 60.0))
    verts = np.concatenate([small, big])
    faces = np.concatenate([small_f, big_f + small.shape[0]])
    tid, depth = zbuffer_reference(verts, faces, height, width)
    frags = raster.rasterize(verts[None], faces, (height, width))
    got = np.asarray(frags.triangle_id[0])
    agree, n = _agreement(got, tid)
    assert n > 0.5 * height * width
    assert agree >= 0.999, agree
    same = (got == tid) & (tid >= 0)
    np.testing.assert_allclose(np.asarray(frags.depth[0])[same], depth[same], rtol=1e-5, atol=1e-5)


def test_agrees_with_jax_rasterizer_on_the_benchmark_mesh_at_224():
    model = procedural_model(189, 189)
    mean, faces = np.asarray(model.mean_shape), np.asarray(model.triangles)
    scale = calibrate_scale(mean, faces, 224, 0.4)
    verts = place(mean, 224, scale)
    tid, depth = zbuffer_reference(verts, faces, 224, 224)
    assert abs(np.mean(tid >= 0) - 0.4) < 0.02         # the benchmark's placement
    frags = raster.rasterize(verts[None], faces, (224, 224))
    got = np.asarray(frags.triangle_id[0])
    agree, _ = _agreement(got, tid)
    assert agree >= 0.999, agree
    same = (got == tid) & (tid >= 0)
    np.testing.assert_allclose(np.asarray(frags.depth[0])[same], depth[same], rtol=1e-5, atol=1e-5)
