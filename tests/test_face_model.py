"""subject/face_model.py: the one check that a model is the one a subject was prepared with
(used by the renderer and A2E tasks, inference and the pseudo refit), and the folded model."""

import numpy as np
import pytest

from metatalk_jax.checksums import file_sha256
from metatalk_jax.face3d.morphable import save_npz
from metatalk_jax.face3d.procedural import procedural_model
from metatalk_jax.subject.face_model import folded_face_model, prepared_morphable
from metatalk_jax.subject.layout import Subject


def subject_with(model_meta, identity=None, albedo=None):
    coefficients = {"identity": identity, "albedo": albedo}
    return Subject("/subjects/me", {"model": model_meta}, coefficients, {}, {})


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Two .npz models with different bytes: the procedural model and a scaled copy."""
    model = procedural_model()
    folder = tmp_path_factory.mktemp("models")
    first, second = str(folder / "first.npz"), str(folder / "second.npz")
    save_npz(model, first)
    save_npz(model.replace(mean_shape=np.asarray(model.mean_shape) * 1.01), second)
    return first, second


def test_the_prepared_model_loads_and_any_other_is_named(model_files):
    first, second = model_files
    subject = subject_with({"name": "first.npz", "sha256": file_sha256(first)})
    loaded = prepared_morphable(subject, first)
    np.testing.assert_array_equal(loaded.mean_shape, procedural_model().mean_shape)
    with pytest.raises(ValueError, match=r"second\.npz: not the model /subjects/me was prepared "
                                         r"with \(first\.npz, sha256 " + file_sha256(first)[:12]):
        prepared_morphable(subject, second)
    # A subject prepared with a file of its own cannot fall back on the offline model.
    with pytest.raises(ValueError, match="prepared with the model first.npz; pass its .npz"):
        prepared_morphable(subject, None)
    with pytest.raises(ValueError, match="missing.npz: model file not found"):
        prepared_morphable(subject, "missing.npz")


def test_the_procedural_model_by_name_and_no_recorded_digest():
    model = prepared_morphable(subject_with({"name": "procedural"}), "procedural")
    assert model.name == procedural_model().name
    with pytest.raises(ValueError, match="not the model"):   # a recorded digest must match
        prepared_morphable(subject_with({"name": "x.npz", "sha256": "0" * 64}), "procedural")


def test_folded_model_renders_identity_and_albedo_without_bases():
    model = procedural_model()
    k = model.id_basis.shape[-1]
    identity = np.linspace(-1.0, 1.0, k).astype(np.float32)
    albedo = np.full((model.num_vertices, 3), 0.25, np.float32)
    folded = folded_face_model(model, identity, albedo)
    want = np.asarray(model.mean_shape) + np.einsum("vck,k->vc", np.asarray(model.id_basis),
                                                    identity)
    np.testing.assert_allclose(folded.mean_shape, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(folded.mean_albedo, albedo)
    assert folded.id_basis.shape[-1] == folded.tex_basis.shape[-1] == 0
    np.testing.assert_array_equal(folded.exp_basis, model.exp_basis)
