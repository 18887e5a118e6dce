"""The mouth reference: texture transfer through the 3DMM (face3d/texture_transfer.py), the choice
of the subject frame with the nearest mouth (subject/mouth_references.py), and the renderer that
corrects the reference instead of redrawing it (models/renderer.OnReference).

Independent expectations: OpenCV's bilinear remap and affine warp for the sampling and the
transfer (a flat mesh whose two positions differ by a known affine map), brute-force nearest
neighbours for the choice, and the warped real crop of the carphone clip against the real crop
of that frame."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatalk_jax.face3d import raster
from metatalk_jax.face3d.texture_transfer import sample_bicubic, transfer_texture
from metatalk_jax.subject.mouth_references import (choose_references, mouth_shapes,
                                                   training_references)


def test_bicubic_samples_equal_opencvs_remap():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (1, 23, 31, 3)).astype(np.float32)
    points = rng.uniform(1.0, 22.0, (1, 9, 11, 2)).astype(np.float32)
    points = np.concatenate([points, [[[[-2.0, 5.0], [40.0, 30.0]] * 5 + [[3.0, 3.0]]] * 9]],
                            axis=2).astype(np.float32)        # some outside: border repeated
    got = np.asarray(sample_bicubic(jnp.asarray(image), jnp.asarray(points)))[0]
    # OpenCV maps index coordinates; continuous pixel (x, y) is index (x - 0.5, y - 0.5).
    want = cv2.remap(image[0], points[0, ..., 0] - 0.5, points[0, ..., 1] - 0.5,
                     cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(got, want, atol=0.05)


def test_a_flat_mesh_transfers_a_photograph_as_the_affine_warp_between_its_two_positions():
    """Two triangles covering a square, drawn at `target` positions; their vertices sit at
    `source` = A target + b in the photograph. Every covered pixel must show the photograph
    at A p + b: OpenCV's affine warp of the photograph by the inverse map."""
    rng = np.random.default_rng(1)
    photo = cv2.GaussianBlur(rng.uniform(0, 255, (48, 48, 3)).astype(np.float32), (0, 0), 1.5)
    target = np.array([[6.0, 5.0], [34.0, 7.0], [31.0, 36.0], [4.0, 33.0]], np.float32)
    a = np.array([[1.1, 0.15], [-0.1, 0.95]], np.float32)
    b = np.array([3.0, 4.0], np.float32)
    source = target @ a.T + b
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    vertices = np.concatenate([target, np.full((4, 1), 5.0, np.float32)], -1)[None]
    fragments = raster.rasterize(jnp.asarray(vertices), jnp.asarray(faces), (40, 40))
    got = np.asarray(transfer_texture(fragments, jnp.asarray(faces), jnp.asarray(source[None]),
                                      jnp.asarray(photo[None])))[0]
    covered = np.asarray(fragments.triangle_id[0]) >= 0
    assert covered.sum() > 600
    # index coordinates: source index = A (target index + 0.5) + b - 0.5
    matrix = np.concatenate([a, (a @ np.full(2, 0.5) + b - 0.5)[:, None]], 1)
    want = cv2.warpAffine(photo, matrix, (40, 40), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(got[covered], want[covered], atol=0.05)
    # Off the mesh: the photograph at the same place (its crop frames the same face).
    grid = ((np.arange(40) + 0.5) * 48 / 40 - 0.5).astype(np.float32)    # 40 px <- 48 px
    identity = cv2.remap(photo, *np.meshgrid(grid, grid), cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(got[~covered], identity[~covered], atol=0.05)


def test_training_references_are_the_nearest_mouths_outside_the_gap():
    rng = np.random.default_rng(2)
    shapes = rng.normal(size=(40, 6))
    train, gap = 32, 3
    chosen = training_references(shapes, train, gap)
    for i, r in enumerate(chosen):
        allowed = [j for j in range(train) if abs(j - i) > gap]
        d = [np.linalg.norm(shapes[i] - shapes[j]) for j in allowed]
        assert r == allowed[int(np.argmin(d))]
        assert r < train and abs(int(r) - i) > gap
    with pytest.raises(ValueError, match="too few"):
        training_references(shapes[:5], 5, 10)


def test_references_stay_unless_another_mouth_is_clearly_nearer():
    bank = np.array([[0.0], [1.0], [10.0]])
    # Drifting between bank 0 and 1: the first choice holds until 1 is 25% nearer.
    query = np.array([[0.1], [0.45], [0.55], [0.6], [0.9], [9.0]])
    assert list(choose_references(query, bank)) == [0, 0, 0, 1, 1, 2]
    # With no hysteresis every frame takes its nearest.
    assert list(choose_references(query, bank, hysteresis=0.0)) == [0, 0, 1, 1, 1, 2]
    # A chunk continues the previous chunk's choice.
    assert list(choose_references(query[2:3], bank, previous=0)) == [0]


def test_mouth_shapes_are_the_expressions_lip_landmarks(carphone_subject):
    from metatalk_jax.face3d import geometry
    from metatalk_jax.subject.face_model import subject_face_model
    from metatalk_jax.subject.layout import load_subject
    subject = load_subject(str(carphone_subject[0]))
    model = subject_face_model(subject)
    e = subject.coefficients["expression"][:5]
    shape = np.asarray(geometry.face_shape(model.as_jax(), jnp.zeros((5, 0)), jnp.asarray(e)))
    lips = shape[:, np.asarray(model.landmark_ids)[48:68]]
    np.testing.assert_allclose(mouth_shapes(model, e), lips.reshape(5, -1), rtol=1e-5, atol=1e-6)


def test_the_warped_reference_shows_the_real_mouth_of_its_frame(carphone_subject):
    """The carphone subject's training references, redrawn in their frames' geometry, look
    like those frames' real crops inside the mouth mask, far closer than the same references
    left unwarped; and each frame's reference is at least the gap away from it."""
    from metatalk_jax.data_pipelines.subject_frames import decode_image, open_target_source
    from metatalk_jax.subject.face_model import subject_face_model
    from metatalk_jax.subject.layout import load_subject
    from metatalk_jax.subject.mouth_references import ReferenceCrops
    from metatalk_jax.subject.render_cache import ensure_reference_cache, reference_frames_path
    subject = load_subject(str(carphone_subject[0]))
    model = subject_face_model(subject)
    gap = 5
    path = ensure_reference_cache(subject, model, 64, gap=gap, show_progress=False)
    references = np.load(path)
    chosen = np.load(reference_frames_path(path))
    assert references.shape == (subject.num_frames, 64, 64, 3)
    assert np.all(np.abs(chosen - np.arange(subject.num_frames)) > gap)
    train = open_target_source(subject.tfds_dir, "train")
    crops = ReferenceCrops(subject.tfds_dir)
    warped_err, plain_err = [], []
    for i in range(0, 80, 8):
        record = train[i]
        real = cv2.resize(decode_image(record["face_crop"], "face_crop"), (64, 64),
                          interpolation=cv2.INTER_AREA).astype(np.float32)
        mask = cv2.resize(decode_image(record["mouth_mask"], "mouth_mask", grayscale=True),
                          (64, 64), interpolation=cv2.INTER_AREA) >= 128
        plain = cv2.resize(crops[chosen[i]], (64, 64), interpolation=cv2.INTER_AREA)
        warped_err.append(np.abs(references[i].astype(np.float32) - real)[mask].mean())
        plain_err.append(np.abs(plain.astype(np.float32) - real)[mask].mean())
    # The geometry does most of the work: the same references unwarped are far further off.
    assert np.mean(warped_err) < 0.8 * np.mean(plain_err), (warped_err, plain_err)


def test_the_renderer_on_a_reference_starts_as_the_reference():
    """OnReference: with its generator's output 0 the renderer returns the reference channels;
    its output is the reference plus the correction, clipped."""
    import ml_collections

    from metatalk_jax.models.renderer import make_renderer
    config = ml_collections.ConfigDict(dict(
        arch="unet", num_downs=5, ngf=8, ndf=8, n_layers_d=2, num_d_scales=1, use_refine=True,
        use_dropout=False, dtype="float32", hd_global_factor=2, hd_local_ngf=8,
        hd_local_blocks=1))
    generator, _ = make_renderer(config, reference=True)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 24), minval=-1, maxval=1)
    variables = generator.init(jax.random.key(1), x, train=False)
    zero = jax.tree.map(jnp.zeros_like, variables)
    np.testing.assert_allclose(generator.apply(zero, x, train=False), x[..., -3:], atol=1e-6)
    plain, _ = make_renderer(config)
    inner = {"params": variables["params"]["generator"],
             "batch_stats": variables["batch_stats"]["generator"]}
    correction = plain.apply(inner, x, train=False)
    np.testing.assert_allclose(generator.apply(variables, x, train=False),
                               np.clip(x[..., -3:] + correction, -1, 1), atol=1e-5)
