"""Rasterizer tests: brute-force agreement, analytic cases, gradients, batching and sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatalk_jax.face3d import raster
from tests.support.raster_reference import brute_force_rasterize


def random_mesh(rng, num_tris, height, width, size=(2.0, 20.0)):
    """Independent random triangles (3 own vertices each) of random size/depth in the image."""
    centres = rng.uniform([0, 0], [width, height], size=(num_tris, 1, 2))
    scale = rng.uniform(*size, size=(num_tris, 1, 1))
    xy = centres + rng.normal(size=(num_tris, 3, 2)) * scale
    z = rng.uniform(1.0, 5.0, size=(num_tris, 1, 1)) + rng.normal(size=(num_tris, 3, 1)) * 0.3
    verts = np.concatenate([xy, z], -1).reshape(-1, 3).astype(np.float32)
    faces = np.arange(num_tris * 3, dtype=np.int32).reshape(-1, 3)
    return verts, faces


@pytest.mark.parametrize("perspective_correct", [False, True])
def test_matches_brute_force_on_random_meshes(perspective_correct):
    rng = np.random.default_rng(0)
    height, width = 48, 64
    verts, faces = random_mesh(rng, 150, height, width)
    # Mix in some large triangles and some sub-pixel ones to exercise every window class.
    big, big_f = random_mesh(rng, 4, height, width, size=(30.0, 60.0))
    tiny, tiny_f = random_mesh(rng, 200, height, width, size=(0.2, 1.0))
    verts = np.concatenate([verts, big, tiny])
    faces = np.concatenate([faces, big_f + 450, tiny_f + 462])
    frags = raster.rasterize(verts[None], faces, (height, width),
                             perspective_correct=perspective_correct)
    tid, depth, bary = brute_force_rasterize(verts, faces, height, width, perspective_correct)
    got = np.asarray(frags.triangle_id[0])
    fg = (tid >= 0) | (got >= 0)
    agree = np.mean(got[fg] == tid[fg])
    assert fg.sum() > 1000
    assert agree >= 0.999, agree
    same = fg & (got == tid) & (tid >= 0)
    np.testing.assert_allclose(np.asarray(frags.barycentric[0])[same], bary[same], atol=1e-4)
    np.testing.assert_allclose(np.asarray(frags.depth[0])[same], depth[same], rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(frags.barycentric[0])[~fg] == 0)


def test_two_triangles_forming_a_square_cover_exactly_the_expected_pixels():
    # Square [2.0, 7.0] x [3.0, 9.0]: pixel centres j+0.5 in (2, 7) -> columns 2..6, rows 3..8.
    verts = np.array([[2, 3, 1], [7, 3, 1], [7, 9, 1], [2, 9, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    frags = raster.rasterize(verts[None], faces, (12, 10))
    expected = np.zeros((12, 10), bool)
    expected[3:9, 2:7] = True
    np.testing.assert_array_equal(np.asarray(frags.mask[0]), expected)
    bsum = np.asarray(frags.barycentric[0]).sum(-1)
    np.testing.assert_allclose(bsum[expected], 1.0, atol=1e-6)
    # Each pixel belongs to the triangle on its side of the diagonal y - 3 = 1.2 (x - 2).
    rows, cols = np.nonzero(expected)
    above = (rows + 0.5 - 3) < 1.2 * (cols + 0.5 - 2)
    np.testing.assert_array_equal(np.asarray(frags.triangle_id[0])[rows, cols],
                                  np.where(above, 0, 1))


def test_nearer_triangle_wins_where_two_overlap():
    far = [[0, 0, 5.0], [20, 0, 5.0], [0, 20, 5.0]]
    near = [[5, 5, 2.0], [20, 5, 2.0], [5, 20, 2.0]]
    verts = np.array(far + near, np.float32)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        frags = raster.rasterize(verts[None], np.array(faces, np.int32), (20, 20))
        near_id = faces.index([3, 4, 5])
        tid = np.asarray(frags.triangle_id[0])
        assert tid[7, 7] == near_id and tid[2, 2] == 1 - near_id
        assert float(frags.depth[0, 7, 7]) == pytest.approx(2.0)
        assert float(frags.depth[0, 2, 2]) == pytest.approx(5.0)


def test_interpolate_reproduces_a_linear_field():
    verts = np.array([[1, 1, 1], [30, 2, 1], [4, 28, 1]], np.float32)
    faces = np.array([[0, 1, 2]], np.int32)
    frags = raster.rasterize(verts[None], faces, (32, 32))
    # Attribute = 2x - 3y + 1 at the vertices interpolates to the same plane at pixel centres.
    attr = (2 * verts[:, 0] - 3 * verts[:, 1] + 1)[:, None]
    out = np.asarray(raster.interpolate(jnp.asarray(attr), faces, frags))[0, ..., 0]
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    m = np.asarray(frags.mask[0])
    np.testing.assert_allclose(out[m], (2 * xs - 3 * ys + 1)[m], rtol=1e-5, atol=1e-3)
    assert np.all(out[~m] == 0)


def test_perspective_correct_interpolation_matches_3d_plane():
    # A tilted 3D quad seen by a pinhole camera: perspective-correct interpolation of the
    # 3D point's X must equal X recovered by back-projecting each pixel ray onto the plane.
    f, cx, cy = 40.0, 16.0, 16.0
    pts = np.array([[-1, -1, 3.0], [1, -1, 5.0], [1, 1, 5.0], [-1, 1, 3.0]])
    proj = np.stack([f * pts[:, 0] / pts[:, 2] + cx, f * pts[:, 1] / pts[:, 2] + cy, pts[:, 2]], -1)
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    frags = raster.rasterize(proj[None].astype(np.float32), faces, (32, 32),
                             perspective_correct=True)
    x_attr = jnp.asarray(pts[:, :1], jnp.float32)
    got = np.asarray(raster.interpolate(x_attr, faces, frags))[0, ..., 0]
    ys, xs = np.mgrid[0:32, 0:32] + 0.5
    # Plane Z = 4 + X; ray X = (u - cx) Z / f  ->  Z = 4 / (1 - (u - cx) / f).
    z = 4.0 / (1.0 - (xs - cx) / f)
    expect_x = (xs - cx) * z / f
    m = np.asarray(frags.mask[0])
    np.testing.assert_allclose(got[m], expect_x[m], atol=2e-4)
    np.testing.assert_allclose(np.asarray(frags.depth[0])[m], z[m], rtol=1e-5)


def test_barycentric_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    verts = np.array([[3.3, 2.1, 1.0], [27.9, 5.2, 1.5], [6.1, 29.4, 2.0],
                      [20.0, 18.0, 0.5], [31.0, 30.0, 0.7], [12.0, 31.5, 0.6]], np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    weights = jnp.asarray(rng.normal(size=(1, 32, 32, 3)), jnp.float32)

    def loss(v):
        frags = raster.rasterize(v[None], faces, (32, 32))
        return jnp.sum(frags.barycentric * weights) + jnp.sum(frags.depth * weights[..., 0])

    v = jnp.asarray(verts)
    grad = np.asarray(jax.grad(loss)(v))
    eps = 1e-3
    # Central differences in float64 on the same (fixed) visibility: the step is far too small
    # to move any pixel centre across an edge of these triangles.
    for i in range(6):
        for k in range(3):
            d = np.zeros_like(verts)
            d[i, k] = eps
            fd = (float(loss(v + d)) - float(loss(v - d))) / (2 * eps)
            assert grad[i, k] == pytest.approx(fd, rel=2e-2, abs=2e-2), (i, k)
    assert np.abs(grad).max() > 0.1


def test_gradient_is_zero_for_a_triangle_covering_no_pixel_and_jit_vmap_work():
    verts = np.array([[[1, 1, 1], [9, 1, 1], [1, 9, 1], [40.2, 40.2, 1], [40.4, 40.2, 1],
                       [40.2, 40.4, 1]]], np.float32)
    faces = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
    g = jax.grad(lambda v: jnp.sum(raster.rasterize(v, faces, (48, 48)).barycentric[..., 0]))(
        jnp.asarray(verts))
    assert np.all(np.asarray(g)[0, 3:] == 0) and np.abs(np.asarray(g)[0, :3]).sum() > 0
    # vmap over a leading axis gives the same as the batched call.
    batch = jnp.asarray(np.stack([verts[0], verts[0] + np.array([3, 2, 0], np.float32)]))
    fn = jax.jit(lambda v: raster.rasterize(v, faces, (48, 48)).triangle_id)
    vm = jax.vmap(lambda v: raster.rasterize(v[None], faces, (48, 48)).triangle_id[0])(batch)
    np.testing.assert_array_equal(np.asarray(fn(batch)), np.asarray(vm))


def test_batched_meshes_are_independent():
    rng = np.random.default_rng(3)
    meshes = [random_mesh(rng, 60, 32, 40) for _ in range(3)]
    faces = meshes[0][1]
    verts = np.stack([m[0] for m in meshes])
    frags = raster.rasterize(verts, faces, (32, 40))
    for b in range(3):
        single = raster.rasterize(verts[b:b + 1], faces, (32, 40))
        np.testing.assert_array_equal(np.asarray(frags.triangle_id[b]),
                                      np.asarray(single.triangle_id[0]))
        np.testing.assert_allclose(np.asarray(frags.barycentric[b]),
                                   np.asarray(single.barycentric[0]), atol=1e-6)


def test_sharded_batch_equals_unsharded():
    devices = jax.devices()
    assert len(devices) == 8, "conftest forces 8 host devices"
    rng = np.random.default_rng(4)
    meshes = [random_mesh(rng, 40, 24, 24) for _ in range(8)]
    faces = meshes[0][1]
    verts = jnp.asarray(np.stack([m[0] for m in meshes]))
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    fn = jax.jit(lambda v: raster.rasterize(v, faces, (24, 24)).barycentric,
                 in_shardings=spec, out_shardings=spec)
    sharded = fn(jax.device_put(verts, spec))
    plain = raster.rasterize(verts, faces, (24, 24)).barycentric
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), atol=1e-6)


def test_sub_pixel_triangles_match_brute_force():
    # A dense mesh at low resolution: most triangles cover no pixel centre and must produce no
    # work and no spurious coverage; the ones that do must win exactly as in the reference.
    rng = np.random.default_rng(5)
    verts, faces = random_mesh(rng, 5000, 64, 64, size=(0.1, 0.4))
    frags = raster.rasterize(verts[None], faces, (64, 64))
    tid, _, _ = brute_force_rasterize(verts, faces, 64, 64)
    got = np.asarray(frags.triangle_id[0])
    fg = (tid >= 0) | (got >= 0)
    assert fg.sum() > 200
    assert np.mean(got[fg] == tid[fg]) >= 0.999


@pytest.mark.slow  # ~25 s of CPU (compiles both rasterizer halves): `make test-slow`
def test_split_passes_equal_rasterize_and_reused_visibility_extrapolates_planes():
    """visible_triangles + fragments_for is rasterize in two halves (same ids, depth,
    barycentrics and gradients); with a stale visibility the barycentrics of the kept triangle
    are its plane evaluated at the pixel (they sum to 1 and may leave [0, 1])."""
    rng = np.random.default_rng(3)
    verts = jnp.asarray(np.concatenate([rng.uniform(0, 32, (2, 60, 2)),
                                        rng.uniform(2, 5, (2, 60, 1))], -1), jnp.float32)
    faces = jnp.asarray(rng.integers(0, 60, (80, 3)), jnp.int32)
    whole = raster.rasterize(verts, faces, (32, 32), perspective_correct=True)
    ids = raster.visible_triangles(verts, faces, (32, 32), perspective_correct=True)
    split = raster.fragments_for(verts, faces, ids, perspective_correct=True)
    np.testing.assert_array_equal(np.asarray(whole.triangle_id), np.asarray(split.triangle_id))
    # Same arithmetic, compiled in one program or two: equal up to float rounding.
    np.testing.assert_allclose(whole.depth, split.depth, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole.barycentric, split.barycentric, rtol=1e-5, atol=1e-6)

    def loss(v, use_split):
        f = (raster.fragments_for(v, faces, ids, perspective_correct=True) if use_split
             else raster.rasterize(v, faces, (32, 32), perspective_correct=True))
        return jnp.sum(f.barycentric[..., 0] * f.depth)
    np.testing.assert_allclose(jax.grad(loss)(verts, True), jax.grad(loss)(verts, False),
                               rtol=1e-4, atol=1e-5)

    moved = verts.at[..., 0].add(0.3)
    stale = raster.fragments_for(moved, faces, ids, perspective_correct=False)
    covered = np.asarray(ids) >= 0
    sums = np.asarray(stale.barycentric).sum(-1)
    np.testing.assert_allclose(sums[covered], 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(stale.triangle_id), np.asarray(ids))


@pytest.mark.parametrize("tile", [1, 3])
def test_coverage_pass_is_the_brute_force_mask(tile):
    """covered_pixels (one sweep, no depth) is where the brute-force z-buffer has a triangle:
    large, sub-pixel and degenerate triangles, two images, and with perspective a triangle
    behind the near plane (dropped by both)."""
    rng = np.random.default_rng(11)
    height, width = 40, 56
    images = []
    for _ in range(2):
        verts, faces = random_mesh(rng, 120, height, width)
        big, big_f = random_mesh(rng, 3, height, width, size=(25.0, 50.0))
        tiny, tiny_f = random_mesh(rng, 150, height, width, size=(0.2, 1.0))
        images.append((np.concatenate([verts, big, tiny]),
                       np.concatenate([faces, big_f + 360, tiny_f + 369])))
    verts = np.stack([v for v, _ in images])
    faces = images[0][1]
    verts[1, :3, 2] = -1.0                  # image 1's first triangle: behind the camera
    verts[0, 3:6] = verts[0, 3]             # image 0's second triangle: degenerate
    for perspective_correct in (False, True):
        got = np.asarray(raster.covered_pixels(verts, faces, (height, width), tile=tile,
                                               perspective_correct=perspective_correct))
        full = raster.rasterize(verts, faces, (height, width), tile=tile,
                                perspective_correct=perspective_correct)
        np.testing.assert_array_equal(got, np.asarray(full.mask))      # same float32 tests
        for b in range(2):
            keep = faces
            if perspective_correct:     # the reference has no near plane: leave it out there
                keep = faces[np.all(verts[b][faces][..., 2] > 1e-6, axis=-1)]
            tid, _, _ = brute_force_rasterize(verts[b], keep, height, width, perspective_correct)
            assert (tid >= 0).sum() > 500
            # float64 edge tests: a pixel centre within rounding of an edge may differ
            assert np.mean(got[b] == (tid >= 0)) >= 0.999
