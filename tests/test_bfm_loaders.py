"""BFM2009 / Deep3DFaceRecon loaders against an independent NumPy derivation on fake files."""

import os
import shutil
import time

import numpy as np
import pytest
import scipy.io

from metatalk_jax.face3d.bfm import load_bfm2009, load_deep3d_front
from metatalk_jax.face3d.morphable import CONVENTIONS, load_npz, save_npz
from tests.support.bfm_fixtures import (ORIGINAL_FILES, audiodvp_mouth_loop, drop_field,
                                        write_bfm2009)

ARRAYS = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis", "triangles",
          "point_buf", "landmark_ids", "mouth_triangle_ids", "face_mask", "skin_mask")


@pytest.fixture(scope="module")
def bfm_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bfm"))
    write_bfm2009(folder)
    return folder


@pytest.fixture
def fresh_dir(tmp_path):
    """A private copy of the fake originals that a test may damage."""
    folder = str(tmp_path / "bfm")
    write_bfm2009(folder)
    return folder


# -- the independent derivation (the way AudioDVP's build_data / Deep3D's transferBFM09 read) ---

def derive_front(folder):
    """Front model in BFM units straight from the files: dict of float64 arrays [V,3(,K)]."""
    bfm = scipy.io.loadmat(os.path.join(folder, "01_MorphableModel.mat"))
    trim = scipy.io.loadmat(os.path.join(folder, "BFM_exp_idx.mat"))["trimIndex"]
    front = scipy.io.loadmat(os.path.join(folder, "BFM_front_idx.mat"))["idx"]
    front = front.astype(np.int64)[:, 0] - 1
    geo = (trim.astype(np.int64)[:, 0] - 1)[front]
    with open(os.path.join(folder, "Exp_Pca.bin"), "rb") as fh:
        count = int(np.fromfile(fh, np.int32, 1)[0])
        np.fromfile(fh, np.float32, 3 * trim.size)  # mean, unused
        exp_pc = np.fromfile(fh, np.float32, 3 * count * trim.size).reshape(count, -1).T
    std = np.loadtxt(os.path.join(folder, "std_exp.txt"))
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    id_b = (f64(bfm["shapePC"]) * f64(bfm["shapeEV"]).reshape(1, -1))[:, :80]
    tex_b = (f64(bfm["texPC"]) * f64(bfm["texEV"]).reshape(1, -1))[:, :80]
    exp_b = (f64(exp_pc) * std.reshape(1, -1))[:, :64]
    info = scipy.io.loadmat(os.path.join(folder, "facemodel_info.mat"))
    return {
        "mean": f64(bfm["shapeMU"]).reshape(-1, 3)[geo],
        "id": id_b.reshape(-1, 3, 80)[geo],
        "exp": exp_b.reshape(-1, 3, 64)[front],
        "albedo": f64(bfm["texMU"]).reshape(-1, 3)[geo] / 255.0,
        "tex": tex_b.reshape(-1, 3, 80)[geo] / 255.0,
        "tri": info["tri"].astype(np.int64) - 1,
        "point_buf": info["point_buf"].astype(np.int64) - 1,
        "keypoints": info["keypoints"][0].astype(np.int64) - 1,
        "frontmask2_idx": info["frontmask2_idx"][:, 0].astype(np.int64) - 1,
        "skinmask": info["skinmask"][0],
        "info": info,
    }


def write_bfm_model_front(folder, path):
    """Deep3DFaceRecon's BFM_model_front.mat from the originals: geometry / 1e5, tex 0-255."""
    ref = derive_front(folder)
    row = lambda a: a.reshape(1, -1).astype(np.float32)  # noqa: E731
    flat = lambda b: b.reshape(-1, b.shape[-1]).astype(np.float32)  # noqa: E731
    info = ref["info"]
    scipy.io.savemat(path, {
        "meanshape": row(ref["mean"] / 1e5), "meantex": row(ref["albedo"] * 255.0),
        "idBase": flat(ref["id"] / 1e5), "exBase": flat(ref["exp"] / 1e5),
        "texBase": flat(ref["tex"] * 255.0),
        **{k: info[k] for k in ("tri", "point_buf", "tri_mask2", "keypoints", "frontmask2_idx",
                                "skinmask")},
    })


# -- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["audiodvp", "deep3d"])
def test_load_bfm2009_matches_derivation(bfm_dir, convention):
    ref = derive_front(bfm_dir)
    model = load_bfm2009(bfm_dir, convention=convention)
    scale = CONVENTIONS[convention]["scale"]
    mean = ref["mean"] * scale
    if convention == "deep3d":
        mean = mean - mean.mean(0)
    close = lambda got, want: np.testing.assert_allclose(  # noqa: E731
        np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    close(model.mean_shape, mean)
    close(model.id_basis, ref["id"] * scale)
    close(model.exp_basis, ref["exp"] * scale)
    close(model.mean_albedo, ref["albedo"])
    close(model.tex_basis, ref["tex"])
    for field in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "tex_basis"):
        assert getattr(model, field).dtype == np.float32, field
    assert model.id_basis.shape == (400, 3, 80) and model.exp_basis.shape == (400, 3, 64)
    np.testing.assert_array_equal(model.triangles, ref["tri"])
    np.testing.assert_array_equal(model.point_buf, ref["point_buf"])
    assert model.point_buf.max() == model.num_triangles  # pad F+1 (1-based) -> F
    np.testing.assert_array_equal(model.landmark_ids, ref["keypoints"])
    face = np.zeros(model.num_vertices)
    face[ref["frontmask2_idx"]] = 1
    np.testing.assert_array_equal(model.face_mask, face)
    np.testing.assert_array_equal(model.skin_mask, ref["skinmask"])
    assert model.convention == convention
    model.validate()


def test_mouth_set_is_audiodvp_rule(bfm_dir):
    ref = derive_front(bfm_dir)
    expected = audiodvp_mouth_loop(ref["mean"] / 92156.7, ref["tri"].tolist())
    for convention in CONVENTIONS:
        model = load_bfm2009(bfm_dir, convention=convention)
        np.testing.assert_array_equal(model.mouth_triangles, expected)
        assert np.all(np.diff(model.mouth_triangle_ids) > 0)
    assert 0 < len(expected) < len(ref["tri"])


@pytest.mark.parametrize("convention", ["deep3d", "audiodvp"])
def test_deep3d_front_equals_originals(bfm_dir, tmp_path, convention):
    path = str(tmp_path / "BFM_model_front.mat")
    write_bfm_model_front(bfm_dir, path)
    got = load_deep3d_front(path, convention=convention)
    want = load_bfm2009(bfm_dir, convention=convention)
    assert got.convention == convention
    for field in ARRAYS:
        a, b = np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        assert a.shape == b.shape and a.dtype == b.dtype, field
        if a.dtype == np.float32:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max(), err_msg=field)
        else:
            np.testing.assert_array_equal(a, b, err_msg=field)


def test_npz_round_trip_is_exact(bfm_dir, tmp_path):
    model = load_bfm2009(bfm_dir, convention="deep3d")
    back = load_npz(save_npz(model, str(tmp_path / "bfm.npz")))
    assert (back.convention, back.name) == (model.convention, model.name)
    for field in ARRAYS:
        np.testing.assert_array_equal(getattr(back, field), getattr(model, field), err_msg=field)
        assert getattr(back, field).dtype == getattr(model, field).dtype


@pytest.mark.parametrize("name", ORIGINAL_FILES)
def test_missing_file_is_named(fresh_dir, name):
    os.remove(os.path.join(fresh_dir, name))
    with pytest.raises(FileNotFoundError, match=name):
        load_bfm2009(fresh_dir)


@pytest.mark.parametrize("name, field", [
    ("01_MorphableModel.mat", "shapeEV"), ("01_MorphableModel.mat", "texPC"),
    ("BFM_exp_idx.mat", "trimIndex"), ("BFM_front_idx.mat", "idx"),
    ("facemodel_info.mat", "point_buf"), ("facemodel_info.mat", "keypoints"),
    ("facemodel_info.mat", "frontmask2_idx"),
])
def test_missing_field_is_named(fresh_dir, name, field):
    drop_field(os.path.join(fresh_dir, name), field)
    with pytest.raises(ValueError, match=rf"{name}.*{field}") as err:
        load_bfm2009(fresh_dir)
    assert "\n" not in str(err.value)


def test_inconsistent_files_are_named(fresh_dir):
    exp_path = os.path.join(fresh_dir, "Exp_Pca.bin")
    shutil.copy(exp_path, exp_path + ".orig")
    with open(exp_path, "r+b") as fh:
        fh.truncate(os.path.getsize(exp_path) - 12)
    with pytest.raises(ValueError, match="Exp_Pca.bin"):
        load_bfm2009(fresh_dir)
    shutil.copy(exp_path + ".orig", exp_path)
    with open(os.path.join(fresh_dir, "std_exp.txt"), "w") as fh:
        fh.write("1 2 3")
    with pytest.raises(ValueError, match="std_exp.txt"):
        load_bfm2009(fresh_dir)


def test_deep3d_front_missing_field_is_named(bfm_dir, tmp_path):
    path = str(tmp_path / "BFM_model_front.mat")
    with pytest.raises(FileNotFoundError, match="BFM_model_front.mat"):
        load_deep3d_front(path)
    write_bfm_model_front(bfm_dir, path)
    drop_field(path, "exBase")
    with pytest.raises(ValueError, match=r"BFM_model_front.mat.*exBase"):
        load_deep3d_front(path)


def test_unknown_convention(bfm_dir):
    with pytest.raises(ValueError, match="convention"):
        load_bfm2009(bfm_dir, convention="opengl")


@pytest.mark.slow
def test_real_sizes_load_fast(tmp_path):
    """The real vertex counts (53,490 / 53,215 / 35,709) load, in a few seconds."""
    folder = str(tmp_path / "bfm_full")
    write_bfm2009(folder, n_full=53490, n_exp=53215, n_front=35709)
    start = time.perf_counter()
    model = load_bfm2009(folder, convention="audiodvp")
    seconds = time.perf_counter() - start
    assert model.num_vertices == 35709 and model.id_basis.shape == (35709, 3, 80)
    assert seconds < 30.0, seconds
