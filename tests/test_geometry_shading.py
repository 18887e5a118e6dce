"""Geometry and SH shading against direct formulas and independent re-derivations."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from metatalk_jax.face3d import geometry, shading


def test_sh_basis_equals_the_formula_evaluated_directly():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(50, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    a = (np.pi, 2 * np.pi / np.sqrt(3), 2 * np.pi / np.sqrt(8))
    c = (1 / np.sqrt(4 * np.pi), np.sqrt(3) / np.sqrt(4 * np.pi),
         3 * np.sqrt(5) / np.sqrt(12 * np.pi))
    x, y, z = n.T
    expect = np.stack([np.full_like(x, a[0] * c[0]), -a[1] * c[1] * y, a[1] * c[1] * z,
                       -a[1] * c[1] * x, a[2] * c[2] * x * y, -a[2] * c[2] * y * z,
                       0.5 * a[2] * c[2] / np.sqrt(3) * (3 * z * z - 1), -a[2] * c[2] * x * z,
                       0.5 * a[2] * c[2] * (x * x - y * y)], -1)
    np.testing.assert_allclose(np.asarray(shading.sh_basis(jnp.asarray(n))), expect,
                               rtol=1e-5, atol=1e-6)


def test_sh_shade_layouts_and_initial_light():
    rng = np.random.default_rng(1)
    n = rng.normal(size=(1, 20, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = rng.uniform(0.2, 0.9, size=(1, 20, 3))
    light = rng.normal(size=(9, 3)) * 0.1                     # [band, channel]
    y = np.asarray(shading.sh_basis(jnp.asarray(n)))
    # AudioDVP: gamma = light.reshape(27) (band-major), +0.7 on band 0 of every channel.
    got = shading.sh_shade(jnp.asarray(albedo), jnp.asarray(n),
                           jnp.asarray(light.reshape(1, 27)), "9x3", 0.7)
    lit = light.copy()
    lit[0] += 0.7
    np.testing.assert_allclose(np.asarray(got), albedo * (y @ lit), rtol=1e-5)
    # Deep3DFaceRecon: gamma = light.T.reshape(27) (channel-major), +0.8.
    got = shading.sh_shade(jnp.asarray(albedo), jnp.asarray(n),
                           jnp.asarray(light.T.reshape(1, 27)), "3x9", 0.8)
    lit = light.copy()
    lit[0] += 0.8
    np.testing.assert_allclose(np.asarray(got), albedo * (y @ lit), rtol=1e-5)
    # Zero lighting coefficients: uniform ambient = albedo * init * a0 * c0
    # = albedo * 0.7 * sqrt(pi)/2.
    flat = shading.sh_shade(jnp.asarray(albedo), jnp.asarray(n), jnp.zeros((1, 27)), "9x3", 0.7)
    np.testing.assert_allclose(np.asarray(flat), albedo * 0.7 * math.sqrt(math.pi) / 2, rtol=1e-5)


def test_euler_rotation_is_extrinsic_xyz():
    rng = np.random.default_rng(2)
    angles = rng.uniform(-1.5, 1.5, size=(10, 3))
    expect = Rotation.from_euler("xyz", angles).as_matrix()    # extrinsic x, then y, then z
    np.testing.assert_allclose(np.asarray(geometry.euler_rotation(jnp.asarray(angles))), expect,
                               atol=1e-5)


def test_pose_conventions():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2, 5, 3))
    ang = rng.uniform(-0.5, 0.5, size=(2, 3))
    t = rng.normal(size=(2, 3))
    rot = Rotation.from_euler("xyz", ang).as_matrix()
    moved, normals = geometry.apply_pose(jnp.asarray(v), jnp.asarray(v), jnp.asarray(ang),
                                         jnp.asarray(t), "audiodvp")
    np.testing.assert_allclose(np.asarray(moved), np.einsum("bij,bvj->bvi", rot, v - t[:, None]),
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(normals), np.einsum("bij,bvj->bvi", rot, v), atol=1e-5)
    moved, _ = geometry.apply_pose(jnp.asarray(v), jnp.asarray(v), jnp.asarray(ang),
                                   jnp.asarray(t), "deep3d")
    np.testing.assert_allclose(np.asarray(moved), np.einsum("bij,bvj->bvi", rot, v) + t[:, None],
                               atol=1e-5)


def uv_sphere(rows=12, cols=24):
    """A closed-ish UV sphere (poles excluded) with outward counter-clockwise triangles."""
    th = np.linspace(0.2, np.pi - 0.2, rows)
    ph = np.linspace(0, 2 * np.pi, cols, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    verts = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    faces = []
    for i in range(rows - 1):
        for j in range(cols):
            a, b = i * cols + j, i * cols + (j + 1) % cols
            c, d = a + cols, b + cols
            faces += [[a, c, b], [b, c, d]]
    return verts, np.array(faces, np.int32)[:, ::-1].copy()


@pytest.mark.parametrize("normalize_faces", [False, True])
def test_vertex_normals_of_a_sphere_are_radial(normalize_faces):
    from metatalk_jax.face3d.morphable import build_point_buf
    verts, faces = uv_sphere()
    # Orientation check independent of the code under test: the triangle normals point outward.
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all(np.sum(cross * tri.mean(1), -1) > 0)
    buf = build_point_buf(faces, len(verts))
    n = np.asarray(geometry.vertex_normals(jnp.asarray(verts[None]), jnp.asarray(faces),
                                           jnp.asarray(buf), normalize_faces=normalize_faces))[0]
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    radial = verts / np.linalg.norm(verts, axis=-1, keepdims=True)
    assert np.min(np.sum(n * radial, -1)) > 0.97


def look_at_perspective_reference(points, size):
    """gluLookAt(eye (0,0,8), centre 0, up (0,-1,0)) + gluPerspective(25 deg), then
    pixel = (ndc + 1) * size / 2, re-derived with plain matrices."""
    eye, up = np.array([0, 0, 8.0]), np.array([0, -1.0, 0])
    fwd = -eye / np.linalg.norm(eye)
    side = np.cross(fwd, up)
    side /= np.linalg.norm(side)
    cam_up = np.cross(side, fwd)
    view = np.eye(4)
    view[:3, :3] = np.stack([side, cam_up, -fwd])
    view[:3, 3] = -view[:3, :3] @ eye
    f = 1 / np.tan(np.radians(25) / 2)
    near, far = 0.01, 100.0
    proj = np.array([[f, 0, 0, 0], [0, f, 0, 0],
                     [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                     [0, 0, -1, 0]])
    clip = (proj @ view @ np.c_[points, np.ones(len(points))].T).T
    ndc = clip[:, :2] / clip[:, 3:]
    return (ndc + 1) * size / 2, clip[:, 3]


def test_audiodvp_camera_matches_look_at_and_perspective():
    rng = np.random.default_rng(4)
    pts = rng.uniform(-1, 1, size=(30, 3))
    pix, w = look_at_perspective_reference(pts, 256)
    got = np.asarray(geometry.audiodvp_camera(256).project(jnp.asarray(pts)))
    np.testing.assert_allclose(got[:, :2], pix, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got[:, 2], w, rtol=1e-6)
    assert geometry.audiodvp_camera(256).mirrored


def test_deep3d_camera_matches_its_projection():
    rng = np.random.default_rng(5)
    pts = rng.uniform(-1, 1, size=(30, 3))
    z = 10 - pts[:, 2]
    u = 1015 * pts[:, 0] / z + 112
    v_up = 1015 * pts[:, 1] / z + 112                # Deep3DFaceRecon's y points up
    got = np.asarray(geometry.deep3d_camera(224).project(jnp.asarray(pts)))
    np.testing.assert_allclose(got[:, 0], u, rtol=1e-5)
    np.testing.assert_allclose(got[:, 1], 224 - v_up, rtol=1e-5)
    # Resizing keeps the same normalised image position.
    big = np.asarray(geometry.deep3d_camera(224).resized(1024, 1024).project(jnp.asarray(pts)))
    np.testing.assert_allclose(big[:, :2] / 1024, got[:, :2] / 224, rtol=1e-5)


def test_ibug_mirror_is_an_involution_swapping_sides():
    m = np.array(geometry.IBUG68_MIRROR)
    assert sorted(m) == list(range(68)) and np.all(m[m] == np.arange(68))
    assert m[0] == 16 and m[36] == 45 and m[48] == 54 and m[30] == 30 and m[8] == 8
