"""The renderer task on the real carphone subject: its conditioning and a short training run.

(f) The tiny renderer trained for a few dozen steps lowers the held-out L1 (whole crop and inside
the mouth mask) against its initialisation and reports SSIM on the held-out frames; the run
writes metrics.jsonl, TensorBoard events, a preview and its checkpoint (marked slow).
"""

from __future__ import annotations

import glob
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metatalk_jax.data_pipelines.subject_frames import decode_example, open_target_source
from metatalk_jax.face3d.render import FaceCoeffs, render
from metatalk_jax.subject.conditioning import stack_window, window_renders
from metatalk_jax.subject.face_model import subject_camera, subject_face_model
from metatalk_jax.subject.layout import load_subject
from metatalk_jax.subject.render_cache import ensure_render_cache
from metatalk_jax.tracking.crop import CropBoxes
from metatalk_jax.train.loop import train_and_evaluate
from metatalk_jax.train.renderer_augment import random_flip
from metatalk_jax.train.renderer_task import RendererTask
from tests.test_previews import assert_labelled_preview
from tests.support.step_reads import keys_read_by_steps
from tests.support.train_runs import checkpoint_steps, metric_rows, tiny_config


@pytest.fixture(scope="module")
def subject(carphone_subject):
    return str(carphone_subject[0])


def test_rendered_windows_land_on_the_stored_face_masks(subject):
    """The renders of the task's windows (from the render cache, drawn with the stored
    coefficients and crop boxes) cover the same pixels as the face masks `prepare` drew into
    the shards at 128 px, at every valid window position."""
    task = RendererTask(tiny_config(subject))
    source = open_target_source(os.path.join(subject, "tfds"), "train")
    half = task.window // 2
    checked = 0
    for centre in (0, 1, 37, 62, len(source) - 1):      # train frame i = video frame i
        window = task.train_source[centre]
        for k in np.flatnonzero(window["valid"]):
            stored = decode_example(source[centre + k - half])["face_mask"]
            stored = cv2.resize(stored, (task.resolution,) * 2,
                                interpolation=cv2.INTER_AREA) > 127
            drawn = window["render"][k].max(-1) > 0
            iou = np.sum(stored & drawn) / np.sum(stored | drawn)
            assert iou > 0.85, (centre, int(k), iou)
            checked += 1
        assert not window["render"][~window["valid"]].any()
    assert checked >= 25


def test_batches_carry_exactly_what_the_steps_read(subject):
    """Every key of a renderer batch is read by the steps (nothing else is uploaded)."""
    task = RendererTask(tiny_config(subject))
    batch = next(iter(task.eval_batches(process_index=0, process_count=1)))
    assert set(batch) == {"render", "mouth_mask", "target", "valid", "example_id",
                          "example_valid"}
    assert keys_read_by_steps(task, batch) == set(batch)


def test_render_cache_equals_the_renderer_on_each_frame(subject):
    """Cache entries are `face3d.render` of the frame's coefficients through its crop box, and
    window_renders is that renderer applied per window position."""
    subj = load_subject(subject)
    model = subject_face_model(subj).as_jax()
    r = 32
    path = ensure_render_cache(subj, subject_face_model(subj), r, show_progress=False)
    cache = np.load(path)
    assert cache.shape == (subj.num_frames, r, r, 3)
    camera = subject_camera(subj, r)
    c = subj.coefficients
    boxes = CropBoxes(subj.crops["centers"], subj.crops["sizes"],
                      tuple(int(v) for v in subj.crops["frame_size"]))
    frames = np.array([0, 41, 99])
    empty = jnp.zeros((len(frames), 0))
    coeffs = FaceCoeffs(empty, jnp.asarray(c["expression"][frames]), empty,
                        jnp.asarray(c["angles"][frames]), jnp.asarray(c["translation"][frames]),
                        jnp.asarray(c["gamma"][frames]))
    direct = render(model, coeffs, camera,
                    screen_transform=jnp.asarray(boxes.screen_transform(r)[frames])).image
    np.testing.assert_allclose(cache[frames] / 255.0, np.asarray(direct), atol=0.5 / 255 + 1e-6)
    window = window_renders(model, camera, *(jnp.asarray(a[frames][None]) for a in (
        c["expression"], c["gamma"], c["angles"], c["translation"],
        boxes.screen_transform(r))))
    np.testing.assert_allclose(np.asarray(window[0]), np.asarray(direct), atol=1e-6)


def test_stack_window_order_masking_and_padding():
    b, w, r = 2, 3, 4
    renders = jnp.stack([jnp.full((b, r, r, 3), 0.1 * (i + 1)) for i in range(w)], 1)
    masks = jnp.ones((b, w, r, r)).at[:, :, 0, 0].set(0.0)
    valid = jnp.array([[True, True, True], [False, True, True]])
    x = np.asarray(stack_window(renders, masks, valid))
    assert x.shape == (b, r, r, 3 * w)
    for i in range(w):
        expected = 0.1 * (i + 1) * 2 - 1
        np.testing.assert_allclose(x[0, 1, 1, 3 * i:3 * i + 3], expected, atol=1e-6)
        np.testing.assert_allclose(x[0, 0, 0, 3 * i:3 * i + 3], -1.0)   # masked out
    np.testing.assert_array_equal(x[1, ..., :3], 0.0)                   # invalid position


def test_random_flip_depends_on_the_example_not_its_place_in_the_batch():
    key = jax.random.key(3)
    ids = jnp.arange(64)
    images = jnp.arange(64 * 2 * 3 * 1, dtype=jnp.float32).reshape(64, 2, 3, 1)
    flipped, again = random_flip(key, ids, images, images + 1)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(flipped) + 1)
    coins = np.array([not np.array_equal(flipped[i], images[i]) for i in range(64)])
    np.testing.assert_array_equal(np.asarray(flipped)[coins], np.asarray(images)[coins][:, :, ::-1])
    assert 16 < coins.sum() < 48
    order = np.random.default_rng(0).permutation(64)
    (permuted,) = random_flip(key, ids[order], images[order])
    np.testing.assert_array_equal(np.asarray(permuted), np.asarray(flipped)[order])


@pytest.mark.slow  # ~90 s of CPU (60 training steps with evaluation): `make test-slow`
def test_tiny_renderer_learns_the_held_out_frames(subject, tmp_path):
    steps = 60
    config = tiny_config(subject, f"total_steps={steps}", f"eval_every_steps={steps}",
                         "eval_at_start=True", f"preview_every_steps={steps}",
                         f"checkpoint_every_steps={steps}", "log_every_steps=10")
    result = train_and_evaluate(config, str(tmp_path), log=lambda *_: None)
    assert result.status == "finished" and result.step == steps
    evals = {row["step"]: row for row in metric_rows(tmp_path) if "eval/l1" in row}
    before, after = evals[0], evals[steps]
    assert after["eval/l1"] < 0.7 * before["eval/l1"]
    assert after["eval/l1_mouth"] < before["eval/l1_mouth"]
    assert 0.0 < after["eval/ssim"] <= 1.0 and after["eval/ssim"] > before["eval/ssim"]
    assert [r["step"] for r in metric_rows(tmp_path) if "g_total" in r] == list(range(10, 61, 10))
    assert checkpoint_steps(tmp_path) == [steps]
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    preview = cv2.imread(str(tmp_path / "previews" / f"preview_{steps:07d}.png"))
    assert_labelled_preview(preview, config.preview_examples, config.data.resolution,
                            3 * config.data.resolution, columns=3)
