"""The procedural face model: sizes, anatomy, topology and the conventions."""

import numpy as np
import pytest

from metatalk_jax.face3d.morphable import CONVENTIONS
from metatalk_jax.face3d.procedural import procedural_model
from tests.support.bfm_fixtures import audiodvp_mouth_loop


@pytest.fixture(scope="module")
def model():
    return procedural_model()


def bfm_units(model):
    """Mean shape back in BFM micrometres (undoing the audiodvp scale)."""
    assert model.convention == "audiodvp"
    return np.asarray(model.mean_shape, np.float64) / CONVENTIONS["audiodvp"]["scale"]


def test_benchmark_size():
    m = procedural_model(189, 189)
    assert m.num_vertices == 189 * 189 == 35721
    assert m.num_triangles == 2 * 188 * 188 == 70688
    assert m.dims == {"id": 80, "exp": 64, "tex": 80}
    assert m.point_buf.shape == (35721, 8)
    m.validate()
    # At this resolution (~1.1 mm rows) every landmark has its own vertex and the chin is
    # strictly the lowest jaw point (the 40 x 40 default's 5.4 mm rows merge a few).
    lm = np.asarray(m.mean_shape)[m.landmark_ids]
    assert len(set(m.landmark_ids.tolist())) == 68
    assert np.argmin(lm[:17, 1]) == 8


def test_shapes_dtypes_and_validate(model):
    model.validate()
    assert model.num_vertices == 1600 and model.num_triangles == 2 * 39 * 39
    for field in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis",
                  "face_mask", "skin_mask"):
        assert getattr(model, field).dtype == np.float32, field
    for field in ("triangles", "point_buf", "landmark_ids", "mouth_triangle_ids"):
        assert getattr(model, field).dtype == np.int32, field
    assert 0.0 <= model.mean_albedo.min() and model.mean_albedo.max() <= 1.0


def test_face_sized_in_bfm_frame(model):
    xyz = bfm_units(model)
    lo, hi = xyz.min(0), xyz.max(0)
    np.testing.assert_allclose([lo[0], hi[0], lo[1], hi[1]], [-90000, 90000, -122000, 89000],
                               rtol=0.05)
    assert -40000 < lo[2] < 0 and 120000 < hi[2] < 140000


def test_landmark_anatomy(model):
    lm = bfm_units(model)[model.landmark_ids]
    assert lm[0, 0] < 0 < lm[16, 0]                       # 0 on the subject's right
    assert lm[8, 1] == lm[:17, 1].min()                  # chin is the lowest jaw point
    assert np.argmax(lm[:, 2]) == 30                      # nose tip most forward
    assert np.all(np.diff(lm[27:31, 1]) < 0)              # bridge runs down to the tip
    brows, eyes, mouth = lm[17:27, 1].mean(), lm[36:48, 1].mean(), lm[48:68, 1].mean()
    assert brows > eyes > lm[30, 1] > lm[31:36, 1].mean() > mouth > lm[8, 1]
    assert lm[36:42, 0].max() < 0 < lm[42:48, 0].min()    # right eye at x < 0
    assert lm[48, 0] < 0 < lm[54, 0]


def test_triangles_face_the_viewer(model):
    # BFM's triangles are counter-clockwise seen from +z; the shading's normals rely on it.
    p = np.asarray(model.mean_shape)[model.triangles]
    normal_z = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2]
    assert np.all(normal_z > 0)


def test_point_buf_matches_brute_force():
    m = procedural_model(9, 13)
    tri = m.triangles.tolist()
    for v in range(m.num_vertices):
        around = {t for t, corners in enumerate(tri) if v in corners}
        row = m.point_buf[v]
        assert set(row[row < m.num_triangles].tolist()) == around
        assert np.all(row[len(around):] == m.num_triangles)


def test_mouth_set_is_audiodvp_rule(model):
    expected = audiodvp_mouth_loop(np.asarray(model.mean_shape, np.float64),
                                   model.triangles.tolist())
    np.testing.assert_array_equal(model.mouth_triangles, expected)


def test_masks(model):
    for mask in (model.face_mask, model.skin_mask):
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    grid = model.face_mask.reshape(40, 40)
    assert grid[0].sum() == grid[-1].sum() == grid[:, 0].sum() == grid[:, -1].sum() == 0
    assert grid[2:-2, 2:-2].min() == 1
    features = model.landmark_ids[np.r_[17:27, 36:68]]
    assert np.all(model.skin_mask[features] == 0)
    assert 0.5 < model.skin_mask.mean() < 0.95


def test_basis_magnitudes(model):
    scale = CONVENTIONS["audiodvp"]["scale"]
    ident = np.asarray(model.id_basis, np.float64) / scale / 1000.0        # mm per unit coeff
    rms = np.sqrt((ident ** 2).sum(1).mean(0))
    assert 0.8 < rms.min() and rms.max() < 3.5
    expr = np.sqrt(((np.asarray(model.exp_basis, np.float64) / scale) ** 2).sum(1))
    y = bfm_units(model)[:, 1]
    assert expr[y < -50000].mean() > 3 * expr[y > 20000].mean()           # mouth and jaw move


def test_conventions_and_determinism():
    a = procedural_model(20, 24, convention="audiodvp", seed=1)
    d = procedural_model(20, 24, convention="deep3d", seed=1)
    ratio = CONVENTIONS["deep3d"]["scale"] / CONVENTIONS["audiodvp"]["scale"]
    raw = np.asarray(a.mean_shape, np.float64) * ratio
    np.testing.assert_allclose(d.mean_shape, raw - raw.mean(0), atol=1e-6)
    np.testing.assert_allclose(d.id_basis, np.asarray(a.id_basis) * ratio, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(d.mouth_triangle_ids, a.mouth_triangle_ids)
    again = procedural_model(20, 24, convention="audiodvp", seed=1)
    other = procedural_model(20, 24, convention="audiodvp", seed=2)
    np.testing.assert_array_equal(again.exp_basis, a.exp_basis)
    np.testing.assert_array_equal(other.mean_shape, a.mean_shape)
    assert not np.allclose(other.id_basis, a.id_basis)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="convention"):
        procedural_model(convention="opengl")
    with pytest.raises(ValueError, match="rows"):
        procedural_model(4, 4)
