"""The expression-faithful renderer draws the mouth its input shows, not the mouth it saw on the
background frame during training: an A/B test on the output pixels.

A renderer (configs/renderer.py:cpu, Meta Talk's conditioning: the mouth cavity in the renders
and frame-identity augmentations) is trained on the carphone subject, then drives the same
backgrounds (the subject's frames in order) with (i) each frame's own expressions and (ii) the
expressions of the sequence reversed. The output's mouth opening is measured on the written
video's pixels by dlib (eval/pixel_lip_sync.py), against the 3DMM opening that drove each frame
(r_drive) and against the background frame's own mouth (r_background). AudioDVP's renderer,
trained the same way, follows the background in (ii) (benchmarks/BENCHMARKS.md,
"Expression-faithful renderer": r_drive 0.53, r_background 0.75).
"""

from __future__ import annotations

import numpy as np
import pytest

from metatalk_jax.config_loading import load_config
from metatalk_jax.inference.pipeline import InferenceSettings, prepare_inference, render_video
from metatalk_jax.train.loop import train_and_evaluate

STEPS = 400


def drive_twice(subject: str, workdir: str, out_dir) -> dict:
    """{"own": PixelLipSync-json, "reversed": ...} of the trained renderer at `workdir`."""
    settings = InferenceSettings(show_progress=False, lip_sync_frames=50, preset="veryfast")
    subj, renderer, video = prepare_inference(subject, workdir, settings)
    own = np.asarray(subj.coefficients["expression"])
    return {name: render_video(subj, renderer, video, expressions, str(out_dir / f"{name}.mp4"),
                               settings)["lip_sync"]
            for name, expressions in (("own", own), ("reversed", own[::-1]))}


def follows_the_drive(scores: dict) -> bool:
    """The check of the A/B, on a reversed drive (drive and background unrelated): the output's
    mouth follows the drive, and clearly more than the background frame's (by 0.3 in r; a
    renderer that copies the background half the time scores about level)."""
    return scores["r_drive"] >= 0.5 and scores["r_background"] < scores["r_drive"] - 0.3


def train(subject: str, workdir: str, *overrides: str, steps: int = STEPS) -> str:
    # one device: the test session forces 8 host devices, which would split a batch of 8 over
    # 2 cores eight ways
    # 64 px, the generator drawing the whole mouth: the settings this A/B is about (the mouth
    # reference, on in renderer:cpu, has its own tests and benchmark)
    config = load_config("renderer:cpu", [f"data.subject={subject}", f"total_steps={steps}",
                                          f"checkpoint_every_steps={steps}", "eval_every_steps=0",
                                          "preview_every_steps=0", "mesh.num_devices=1",
                                          "data.resolution=64", "data.mouth_reference=False",
                                          "model.correction_factor=1", *overrides])
    train_and_evaluate(config, workdir, log=lambda *_: None)
    return workdir


@pytest.mark.slow  # ~2.5 min on 2 cores: `make test-slow`
def test_the_faithful_renderer_follows_a_reversed_drive_not_the_background(
        carphone_subject, tmp_path):
    """~2 min on a quiet 2-core machine: 400 training steps at 64 px, two 4-s videos measured on 50
    frames."""
    subject = str(carphone_subject[0])
    assert load_config("renderer:cpu").data.conditioning == "mouth_cavity"
    scores = drive_twice(subject, train(subject, str(tmp_path / "run")), tmp_path)
    print(scores)
    own, reversed_ = scores["own"], scores["reversed"]
    # (i) its own expressions: the drive is the background's mouth (their r is ~0.9), both high
    assert own["detection_rate"] > 0.9 and own["r_drive"] > 0.8, own
    # (ii) reversed: drive and background are unrelated (r ~0.1); the output follows the drive
    assert abs(reversed_["r_drive_background"]) < 0.3, reversed_
    assert reversed_["detection_rate"] > 0.9, reversed_
    assert follows_the_drive(reversed_), reversed_


@pytest.mark.slow  # ~2.5 min: AudioDVP's renderer settings, trained as above
def test_the_check_fails_for_audiodvps_renderer(carphone_subject, tmp_path):
    """The A/B's other half: AudioDVP's conditioning without the augmentations, trained the
    same 400 steps, draws the background frame's mouth on the reversed drive, so the check above
    fails (measured: r_background 0.71 against r_drive 0.63, another run 0.63 against 0.65; at
    the demo's 1200 steps 0.75 against 0.53: the longer it trains, the more it memorises; the
    faithful renderer: 0.12 against 0.97)."""
    subject = str(carphone_subject[0])
    run = train(subject, str(tmp_path / "run"), "data.conditioning=audiodvp",
                "data.augment_shift=0.0", "data.augment_gain=0.0")
    reversed_ = drive_twice(subject, run, tmp_path)["reversed"]
    print(reversed_)
    assert not follows_the_drive(reversed_), reversed_
