"""Silence is silence (inference/silence.py): the subject's own closed mouth as the rest
expression, the blend into it in the driving audio's pauses, and `infer` end to end with a
pause: the drive closes there with the rest on, and does not with it off (the A/B)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metatalk_jax.inference.silence import rest_expression, settle_in_silence


@pytest.fixture(scope="module")
def subject_and_model(carphone_subject):
    from metatalk_jax.subject.face_model import subject_face_model
    from metatalk_jax.subject.layout import load_subject
    subject = load_subject(str(carphone_subject[0]))
    return subject, subject_face_model(subject)


def test_the_rest_expression_is_the_subjects_neutral_face_with_the_lips_together(
        subject_and_model):
    """On the 3D face (geometry.face_shape), the rest's inner lips meet (their vertical gap is
    ~0, far below every fitted frame of a speaker who never quite closes the lips), and away
    from the mouth it is the neutral face (brows, nose and eyes keep still)."""
    from metatalk_jax.face3d import geometry
    from metatalk_jax.subject.mouth_shapes import neutral_expression
    subject, model = subject_and_model
    fitted = np.asarray(subject.coefficients["expression"], np.float32)
    rest = rest_expression(model, fitted)
    ids = np.asarray(model.landmark_ids)

    def shapes(e):
        return np.asarray(geometry.face_shape(model.as_jax(), np.zeros((len(e), 0), np.float32),
                                              np.asarray(e, np.float32)))

    def vertical_gaps(e):
        s = shapes(e)
        return np.mean([s[:, ids[a], 1] - s[:, ids[b], 1] for a, b in
                        ((61, 67), (62, 66), (63, 65))], axis=0)

    fitted_gaps = vertical_gaps(fitted)
    assert abs(vertical_gaps(rest[None])[0]) < 0.05 * np.percentile(fitted_gaps, 5)
    both = shapes(np.stack([rest, neutral_expression(fitted)]))
    moved = np.linalg.norm(both[0, ids[17:48]] - both[1, ids[17:48]], axis=-1).max()
    closed_by = np.linalg.norm(both[0, ids[61:68]] - both[1, ids[61:68]], axis=-1).max()
    assert moved < 0.25 * closed_by


def test_settling_keeps_speech_and_reaches_the_rest_deep_in_a_pause():
    rng = np.random.default_rng(0)
    talking = rng.normal(size=(50, 4)).astype(np.float32)
    rest = np.array([9.0, 9.0, 9.0, 9.0], np.float32)
    weight = np.zeros(50)
    weight[20:30] = np.linspace(0, 1, 10)
    out = settle_in_silence(talking, weight, rest)
    np.testing.assert_array_equal(out[:20], talking[:20])
    np.testing.assert_allclose(out[29], rest, atol=1e-5)
    np.testing.assert_allclose(out[25], talking[25] + weight[25] * (rest - talking[25]),
                               rtol=1e-5)


def test_infer_closes_the_mouth_in_a_pause_and_keeps_it_talking_without_the_rest(
        carphone_subject, tmp_path, capsys, subject_and_model):
    """Speech, 1.6 s of silence, speech: the drive sidecar marks the pause, and the 3DMM mouth
    in it is the rest expression's with the rest on; with --no-rest-in-pauses the A2E's own
    (untrained, so arbitrary) mouth stays there."""
    from metatalk_jax import infer
    from metatalk_jax.media.audio_files import write_wav
    from metatalk_jax.media.speech import synthesize, with_pauses
    from tests.support.infer_fixtures import random_a2e, random_renderer
    subject = str(carphone_subject[0])
    parts = [synthesize(t, voice="en-us", rate_wpm=160) for t in
             ("Bob made a map of the old harbour.", "Please pass me the butter.")]
    speech = with_pauses(parts, 1.6)
    audio = write_wav(str(tmp_path / "pause.wav"), speech.audio, speech.sample_rate)
    a2e = random_a2e(str(tmp_path / "a2e"), subject, 10, seed=3)
    renderer = random_renderer(str(tmp_path / "renderer"), subject, resolution=32)
    pause_start = parts[0].duration_s
    records = {}
    for name, extra in (("rest", []), ("no_rest", ["--no-rest-in-pauses"])):
        out = tmp_path / f"{name}.mp4"
        code = infer.main(["--subject", subject, "--a2e", a2e, "--renderer", renderer,
                           "--audio", audio, "--out", str(out), "--lip-sync-frames", "0",
                           *extra])
        assert code == 0, capsys.readouterr().err
        records[name] = json.loads((tmp_path / f"{name}.drive.json").read_text())
    voiced = np.array(records["rest"]["voiced"], bool)
    frames = np.arange(len(voiced)) / 25.0
    deep = (frames > pause_start + 0.3) & (frames < pause_start + 1.3)
    assert not voiced[deep].any() and voiced[frames < pause_start - 0.3].mean() > 0.8
    rest_open = np.array(records["rest"]["drive_opening"])
    free_open = np.array(records["no_rest"]["drive_opening"])
    # deep in the pause every frame shows the same, closed mouth; speech frames are untouched
    assert np.ptp(rest_open[deep]) < 1e-3
    np.testing.assert_allclose(rest_open[voiced], free_open[voiced], atol=1e-4)
    assert rest_open[deep].max() < np.percentile(free_open[voiced], 25)
    assert np.abs(free_open[deep] - rest_open[deep]).max() > 1e-3
