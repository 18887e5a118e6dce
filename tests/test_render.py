"""Renderer composition, landmark conventions, mouth mask and silhouette antialiasing."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatalk_jax.face3d import geometry, raster, render
from metatalk_jax.face3d.antialias import antialias
from metatalk_jax.face3d.procedural import procedural_model
from metatalk_jax.subject.conditioning import dilated_mouth_masks


@pytest.fixture(scope="module")
def deep3d_model():
    return procedural_model(40, 40, convention="deep3d").as_jax()


def test_landmarks_are_upright_and_not_mirrored_with_the_pinhole_camera(deep3d_model):
    out = render.render(deep3d_model, render.FaceCoeffs.zeros(deep3d_model),
                        geometry.deep3d_camera(224))
    lm = np.asarray(out.landmarks[0])
    assert lm[0, 0] < 112 < lm[16, 0]            # subject's right jaw end on the image left
    assert lm[8, 1] > lm[30, 1] > lm[27, 1]      # chin below nose tip below nose bridge
    assert np.all((lm > 0) & (lm < 224))
    # Every landmark lies on the rendered face.
    alpha = np.asarray(out.alpha[0])
    assert all(alpha[int(y), int(x)] > 0 for x, y in lm)


def test_audiodvp_camera_mirrors_and_landmark_order_follows():
    model = procedural_model(40, 40, convention="audiodvp").as_jax()
    cam = geometry.audiodvp_camera(256)
    out = render.render(model, render.FaceCoeffs.zeros(model), cam)
    lm = np.asarray(out.landmarks[0])
    assert lm[0, 0] < lm[16, 0] and lm[8, 1] > lm[27, 1]   # image order kept by the permutation
    raw = np.asarray(cam.project(model.mean_shape[model.landmark_ids]))
    assert raw[0, 0] > raw[16, 0]                          # the model's own landmark 0 is mirrored


def test_pixel_colour_is_the_interpolated_sh_shaded_vertex_colour(deep3d_model):
    m = deep3d_model
    rng = np.random.default_rng(0)
    coeffs = render.FaceCoeffs.zeros(m)._replace(
        gamma=jnp.asarray(rng.normal(size=(1, 27)) * 0.1, jnp.float32),
        angles=jnp.asarray([[0.1, -0.2, 0.05]], jnp.float32))
    cam = geometry.deep3d_camera(128)
    out = render.render(m, coeffs, cam)
    # Independent recomputation of the same quantities in NumPy.
    v = np.asarray(m.mean_shape, np.float64)
    tri = np.asarray(m.triangles)
    fn = np.cross(v[tri[:, 0]] - v[tri[:, 1]], v[tri[:, 1]] - v[tri[:, 2]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, tri[:, k], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)
    from scipy.spatial.transform import Rotation
    rot = Rotation.from_euler("xyz", [0.1, -0.2, 0.05]).as_matrix()
    vn = vn @ rot.T
    x, y, z = vn.T
    a = (np.pi, 2 * np.pi / np.sqrt(3), 2 * np.pi / np.sqrt(8))
    c = (1 / np.sqrt(4 * np.pi), np.sqrt(3) / np.sqrt(4 * np.pi),
         3 * np.sqrt(5) / np.sqrt(12 * np.pi))
    basis = np.stack([np.full_like(x, a[0] * c[0]), -a[1] * c[1] * y, a[1] * c[1] * z,
                      -a[1] * c[1] * x, a[2] * c[2] * x * y, -a[2] * c[2] * y * z,
                      0.5 * a[2] * c[2] / np.sqrt(3) * (3 * z * z - 1),
                      -a[2] * c[2] * x * z, 0.5 * a[2] * c[2] * (x * x - y * y)], -1)
    light = np.asarray(coeffs.gamma[0]).reshape(3, 9).T.copy()
    light[0] += 0.8
    colour = np.asarray(m.mean_albedo) * (basis @ light)
    frags = out.fragments
    tid = np.asarray(frags.triangle_id[0])
    bary = np.asarray(frags.barycentric[0])
    ys, xs = np.nonzero(tid >= 0)
    expect = np.einsum("pk,pkc->pc", bary[ys, xs], colour[tri[tid[ys, xs]]])
    # point_buf keeps at most 8 triangles per vertex; the procedural grid has at most 6.
    np.testing.assert_allclose(np.asarray(out.image[0])[ys, xs], np.clip(expect, 0, 1), atol=2e-4)
    assert np.all(np.asarray(out.image[0])[tid < 0] == 0)


def test_mouth_mask_is_inside_the_face_and_below_the_nose(deep3d_model):
    out = render.render(deep3d_model, render.FaceCoeffs.zeros(deep3d_model),
                        geometry.deep3d_camera(160))
    mouth = np.asarray(out.mouth_mask[0]) > 0
    face = np.asarray(out.alpha[0]) > 0
    assert mouth.sum() > 100 and np.all(face[mouth])
    rows = np.nonzero(mouth)[0]
    assert rows.min() > np.asarray(out.landmarks[0])[27, 1]      # all below the nose bridge


def test_mouth_mask_is_the_mouth_regions_own_rasterization(deep3d_model):
    """The render's mouth mask (a coverage-only pass) is where the mouth triangles, rasterized
    on their own, have a winner, in a turned and a frontal pose."""
    coeffs = render.FaceCoeffs.zeros(deep3d_model, 2)
    coeffs = coeffs._replace(angles=jnp.asarray([[0.0, 0.0, 0.0], [0.3, 0.5, 0.1]]))
    camera = geometry.deep3d_camera(96)
    out = render.render(deep3d_model, coeffs, camera)
    pix = render.project_to_screen(camera, render.posed_vertices(deep3d_model, coeffs)[0])
    alone = raster.rasterize(pix, deep3d_model.mouth_triangles, (96, 96),
                             perspective_correct=True)
    assert np.asarray(alone.mask).sum() > 200
    np.testing.assert_array_equal(np.asarray(out.mouth_mask) > 0, np.asarray(alone.mask))


@pytest.mark.parametrize("steps", [1, 4])
def test_mouth_mask_dilation_is_opencvs(steps):
    """The masks' dilation (a separable maximum on the device) equals AudioDVP's cv2.dilate with
    a 3x3 kernel iterated `steps` times, at the image borders too."""
    rng = np.random.default_rng(steps)
    mouth = (rng.random((3, 40, 56)) > 0.995).astype(np.float32)
    mouth[0, 10:20, 5:30] = 1.0
    mouth[1, :2, :3] = 1.0
    mouth[2, -1:, -4:] = 0.7
    got = np.asarray(dilated_mouth_masks(mouth, steps))
    for m, g in zip(mouth, got):
        want = cv2.dilate((m > 0.5).astype(np.uint8) * 255, np.ones((3, 3), np.uint8),
                          iterations=steps)
        np.testing.assert_array_equal(g, want)


def test_landmark_gradients_match_finite_differences(deep3d_model):
    cam = geometry.deep3d_camera(224)

    def loss(t):
        coeffs = render.FaceCoeffs.zeros(deep3d_model)._replace(translation=t[None, :3],
                                                                angles=t[None, 3:])
        verts, _ = render.posed_vertices(deep3d_model, coeffs)
        lm = cam.project(verts[:, deep3d_model.landmark_ids])[..., :2]
        return jnp.sum((lm - 100.0) ** 2) / 1000.0

    t = jnp.asarray([0.05, -0.02, 0.3, 0.1, 0.2, -0.05], jnp.float32)
    g = np.asarray(jax.grad(loss)(t))
    for i in range(6):
        e = np.zeros(6, np.float32)
        e[i] = 1e-3
        fd = (float(loss(t + e)) - float(loss(t - e))) / 2e-3
        assert g[i] == pytest.approx(fd, rel=2e-2, abs=1e-2)


def test_coefficient_vectors_follow_reference_layouts(deep3d_model):
    rng = np.random.default_rng(1)
    c257 = jnp.asarray(rng.normal(size=(2, 257)), jnp.float32)
    coeffs = render.FaceCoeffs.from_deep3d(c257)
    np.testing.assert_array_equal(np.asarray(coeffs.angles), np.asarray(c257[:, 224:227]))
    np.testing.assert_array_equal(np.asarray(coeffs.gamma), np.asarray(c257[:, 227:254]))
    np.testing.assert_array_equal(np.asarray(coeffs.to_deep3d()), np.asarray(c257))
    c97 = jnp.asarray(rng.normal(size=(3, 97)), jnp.float32)
    coeffs = render.FaceCoeffs.from_audiodvp(c97, jnp.zeros(80), jnp.zeros(80))
    np.testing.assert_array_equal(np.asarray(coeffs.expression), np.asarray(c97[:, :64]))
    np.testing.assert_array_equal(np.asarray(coeffs.translation), np.asarray(c97[:, 94:97]))
    np.testing.assert_array_equal(np.asarray(coeffs.to_audiodvp()), np.asarray(c97))


SQUARE_FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)


def square(x0, y0, x1, y1):
    return jnp.asarray([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], jnp.float32)


def coverage_sum(v, aa=True):
    frags = raster.rasterize(v[None], SQUARE_FACES, (24, 24))
    cov = frags.mask[..., None].astype(jnp.float32)
    if aa:
        cov = antialias(cov, frags, v[None], SQUARE_FACES)
    return jnp.sum(cov)


@pytest.mark.parametrize("box", [(3.3, 4.1, 16.7, 19.6), (2.9, 3.05, 15.2, 20.95)])
def test_antialiased_coverage_gives_area_and_silhouette_gradients(box):
    x0, y0, x1, y1 = box
    v = square(*box)
    area = (x1 - x0) * (y1 - y0)
    assert float(coverage_sum(v)) == pytest.approx(area, abs=1.0)
    g = np.asarray(jax.grad(coverage_sum)(v))
    # d(area)/d(right edge x) = height, d(area)/d(bottom edge y) = width; corner pixels are handled
    # by one triangle only, so allow one pixel of slack.
    assert g[1, 0] + g[2, 0] == pytest.approx(y1 - y0, abs=1.0)
    assert g[2, 1] + g[3, 1] == pytest.approx(x1 - x0, abs=1.0)
    assert g[0, 0] + g[3, 0] == pytest.approx(-(y1 - y0), abs=1.0)
    # The hard rasterizer alone has no silhouette gradient: coverage is piecewise constant.
    assert np.all(np.asarray(jax.grad(lambda v: coverage_sum(v, aa=False))(v)) == 0)


def test_antialiased_rotated_square_area():
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    corners = np.array([[-5, -5], [5, -5], [5, 5], [-5, 5]]) @ rot.T + 12
    v = jnp.asarray(np.c_[corners, np.ones(4)], jnp.float32)
    assert float(coverage_sum(v)) == pytest.approx(100.0, abs=1.0)
