"""espeak-ng speech (media/speech.py), visemes (pseudo_video/visemes.py) and the viseme teacher
(pseudo_video/viseme_teacher.py, `python -m metatalk_jax.pseudo --teacher visemes`).

Expectations are independent of the code under test: audio energy measured on the samples,
lip gaps computed here from the model's expression basis and landmark ids, and a subject
written here from the offline model (no video, no prepare run).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from metatalk_jax.media import speech
from metatalk_jax.pseudo_video import visemes
from metatalk_jax.subject.mouth_shapes import MouthShapes

pytestmark = pytest.mark.skipif(not speech.espeak_available(),
                                reason=f"no espeak-ng library ({speech.INSTALL_HINT})")


def _rms_envelope(audio, sample_rate, hop_s=0.01):
    """[F] RMS of consecutive hop_s-long pieces, and their centre times [F]."""
    hop = int(round(hop_s * sample_rate))
    count = len(audio) // hop
    pieces = np.asarray(audio[:count * hop], np.float64).reshape(count, hop)
    return np.sqrt((pieces ** 2).mean(1)), (np.arange(count) + 0.5) * hop / sample_rate


def _gap_fraction(model, expressions):
    """Inner-lip gap (landmark 62 above 66) over the face height (27 to 8), from the basis."""
    lm = np.asarray(model.landmark_ids)
    mean = np.asarray(model.mean_shape, np.float64)
    basis = np.asarray(model.exp_basis, np.float64)
    e = np.atleast_2d(np.asarray(expressions, np.float64))
    y62 = mean[lm[62], 1] + e @ basis[lm[62], 1]
    y66 = mean[lm[66], 1] + e @ basis[lm[66], 1]
    return (y62 - y66) / (mean[lm[27], 1] - mean[lm[8], 1])


@pytest.fixture(scope="module")
def offline_model():
    from metatalk_jax.face3d.assets import ensure_offline_model
    from metatalk_jax.face3d.morphable import load_npz
    return load_npz(ensure_offline_model("audiodvp"))


# -- speech ------------------------------------------------------------------------------------

def test_synthesis_audio_duration_and_phonemes():
    said = speech.synthesize("Bob made a map.", voice="en-us", rate_wpm=160)
    assert said.sample_rate == 16000 and said.audio.dtype == np.float32
    assert np.abs(said.audio).max() <= 1.0 and np.sqrt(np.mean(said.audio ** 2)) > 0.02
    starts = [p[0] for p in said.phonemes]
    assert starts == sorted(starts)
    # espeak's own time of its last event (the closing pause) against the sample count.
    assert abs(said.phonemes[-1][0] - said.duration_s) < 0.2
    spoken = [p[2] for p in said.phonemes if not visemes.is_pause(p[2])]
    assert spoken.count("b") == 2 and spoken.count("m") == 2 and spoken.count("p") == 1
    assert "eI" in spoken and spoken[0] == "b" and spoken[-1] == "p"
    # The same call again (engine initialised once) says the same phonemes at nearly the same
    # times (espeak's pitch flutter runs on between calls); at espeak's own rate the duration
    # agrees.
    again = speech.synthesize("Bob made a map.", voice="en-us", rate_wpm=160)
    assert [p[2] for p in again.phonemes] == [p[2] for p in said.phonemes]
    np.testing.assert_allclose([p[0] for p in again.phonemes], starts, atol=0.005)
    assert abs(again.duration_s - said.duration_s) < 0.005
    native = speech.synthesize("Bob made a map.", voice="en-us", rate_wpm=160, sample_rate=22050)
    assert abs(native.duration_s - said.duration_s) < 1e-3
    slow = speech.synthesize("Bob made a map.", voice="en-us", rate_wpm=100)
    assert slow.duration_s > 1.25 * (said.phonemes[-2][0])    # the spoken part slows down


def test_voiced_energy_lies_inside_phoneme_spans():
    said = speech.synthesize("Hello there, my friend. Good morning!", voice="en")
    rms, times = _rms_envelope(said.audio, said.sample_rate)
    spans = said.phonemes
    speech_level = np.median(rms[[any(a <= t < b and not visemes.is_pause(p)
                                      for a, b, p in spans) for t in times]])
    pauses = [(a, b) for a, b, p in spans if visemes.is_pause(p) and b - a > 0.1]
    assert len(pauses) >= 2                        # the comma, the full stop (and the end)
    for a, b in pauses:
        middle = (times > a + 0.04) & (times < b - 0.02)
        assert middle.any() and rms[middle].max() < 0.05 * speech_level, (a, b)
    inside = np.zeros(len(times), bool)
    for a, b, p in spans:
        if not visemes.is_pause(p):
            inside |= (times >= a - 0.02) & (times < b + 0.02)
    energy = rms ** 2
    assert energy[inside].sum() > 0.98 * energy.sum()


def test_bad_speech_arguments():
    with pytest.raises(ValueError, match="no voice 'xx-nonexistent'"):
        speech.synthesize("hello", voice="xx-nonexistent")
    with pytest.raises(ValueError, match="text is empty"):
        speech.synthesize("  ")
    with pytest.raises(ValueError, match="rate_wpm"):
        speech.synthesize("hello", rate_wpm=20)
    assert issubclass(speech.SpeechUnavailable, ValueError)


# -- visemes -----------------------------------------------------------------------------------

def test_phoneme_to_viseme_table():
    assert visemes.phoneme_visemes("p") == ("bilabial",)
    assert visemes.phoneme_visemes("m") == ("bilabial",)
    assert visemes.phoneme_visemes("v") == ("labiodental",)
    assert visemes.phoneme_visemes("aI") == ("open", "spread")
    assert visemes.phoneme_visemes("@2") == ("schwa",)            # stem fallback
    assert visemes.phoneme_visemes("_:") == ("rest",)
    assert visemes.phoneme_visemes("u:") == ("rounded",)
    assert visemes.phoneme_visemes("Q%") == ("other",)
    assert visemes.phoneme_visemes(";") == ()
    # Every phoneme espeak says for a pangram has a real class.
    said = speech.synthesize("The quick brown fox jumps over the lazy dog.", voice="en-us")
    for _, _, symbol in said.phonemes:
        assert visemes.phoneme_visemes(symbol) != ("other",), symbol


def test_mouth_shapes_close_and_open_the_lips(offline_model):
    # A neutral with the mouth clearly open: the closed visemes must still close it.
    neutral = np.zeros(offline_model.dims["exp"], np.float32)
    neutral[0] = -2.0
    assert _gap_fraction(offline_model, neutral)[0] > 0.07
    shapes = MouthShapes(offline_model, neutral)
    by_class = dict(zip(visemes.VISEME_CLASSES, visemes.viseme_expressions(shapes)))
    gaps = {name: _gap_fraction(offline_model, e)[0] for name, e in by_class.items()}
    assert abs(gaps["bilabial"]) < 0.01 and abs(gaps["rest"]) < 0.01
    assert gaps["open"] > 0.1 and gaps["mid"] > 0.06
    assert gaps["open"] > gaps["mid"] > gaps["spread"] > gaps["labiodental"]
    # Spread widens the mouth, rounded narrows it (corner distance from the basis).
    lm = np.asarray(offline_model.landmark_ids)
    basis = np.asarray(offline_model.exp_basis, np.float64)

    def width(e):
        return (basis[lm[54], 0] - basis[lm[48], 0]) @ (e - neutral)
    sign = np.sign(np.asarray(offline_model.mean_shape)[lm[54], 0] -
                   np.asarray(offline_model.mean_shape)[lm[48], 0])
    assert sign * width(by_class["spread"]) > 0 > sign * width(by_class["rounded"])


def test_mouth_shapes_work_on_the_procedural_model():
    from metatalk_jax.face3d.procedural import procedural_model
    model = procedural_model(48, 48)
    shapes = MouthShapes(model, np.zeros(model.dims["exp"]), max_delta_norm=4.0)
    out = visemes.viseme_expressions(shapes)
    assert out.shape == (len(visemes.VISEME_CLASSES), model.dims["exp"])
    assert np.all(np.isfinite(out)) and np.all(np.linalg.norm(out, axis=1) <= 4.0 + 1e-4)
    gaps = _gap_fraction(model, out)
    names = list(visemes.VISEME_CLASSES)
    assert gaps[names.index("open")] > gaps[names.index("bilabial")]


def test_control_tracks_close_bilabials_and_open_vowels():
    phonemes = [(0.0, 0.3, "_:"), (0.3, 0.33, "m"), (0.33, 0.6, "a"), (0.6, 0.68, "p"),
                (0.68, 0.9, "A:"), (0.9, 1.5, "_:")]
    fps = 25.0
    controls = visemes.control_tracks(phonemes, 38, fps)
    opening = controls[:, 0]
    assert controls.shape == (38, 3)
    assert opening[0] == pytest.approx(0.0, abs=1e-6)     # rest at the start and the end
    assert abs(opening[-1]) < 1e-3
    # The 30 ms /m/ falls between frame times (0.28 and 0.32 s are the nearest frames) but one
    # frame still closes; the /p/ closes the frame at its middle.
    assert opening[int(round(0.315 * fps))] == pytest.approx(0.0, abs=1e-6)
    assert opening[int(round(0.64 * fps))] == pytest.approx(0.0, abs=1e-6)
    assert opening[int(round(0.465 * fps))] > 0.08        # /a/ open
    assert opening[int(round(0.79 * fps))] > 0.08
    classes = visemes.frame_visemes(phonemes, 38, fps)
    assert visemes.VISEME_CLASSES[classes[int(0.5 * fps)]] == "open"


# -- the teacher on a subject written here -----------------------------------------------------

def _write_subject(path, model, frames=12):
    """A minimal prepared subject: offline model, frontal still pose, AudioDVP camera."""
    from metatalk_jax.face3d import geometry
    os.makedirs(path)
    rng = np.random.default_rng(0)
    e = model.dims["exp"]
    expression = rng.normal(0.0, 0.5, (frames, e)).astype(np.float32)
    np.savez(os.path.join(path, "coefficients.npz"), expression=expression,
             gamma=np.zeros((frames, 27), np.float32), angles=np.zeros((frames, 3), np.float32),
             translation=np.zeros((frames, 3), np.float32),
             identity=np.zeros(model.dims["id"], np.float32),
             texture=np.zeros(0, np.float32), albedo=np.asarray(model.mean_albedo, np.float32))
    cam = geometry.audiodvp_camera(256)
    np.savez(os.path.join(path, "crops.npz"), centers=np.full((frames, 2), 128.0, np.float32),
             sizes=np.full(frames, 150.0, np.float32),
             matrices=np.zeros((frames, 2, 3), np.float32), frame_size=np.array([256, 256]),
             camera=np.array([cam.focal_x, cam.focal_y, cam.cx, cam.cy, cam.distance]))
    np.savez(os.path.join(path, "landmarks.npz"), landmarks=np.zeros((frames, 68, 2)),
             boxes=np.zeros((frames, 4)), detected=np.ones(frames, bool))
    meta = {"format": "metatalk_jax.subject", "format_version": 1, "fps": 25.0,
            "num_frames": frames, "sample_rate": 16000, "audio_samples": 10240,
            "fingerprint": "synthetic-subject", "fit_resolution": 96,
            "renderer_resolution": 128, "model": {"name": "offline_bfm_audiodvp_v1.npz"}}
    with open(os.path.join(path, "subject.json"), "w") as f:
        json.dump(meta, f)
    return str(path)


def _teacher_config(**overrides):
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.pseudo import CONFIG_FILE
    # The table's own mouths (the subject's random expressions say nothing of a person's range;
    # the calibration has its own test).
    base = {"clips_per_part": 2, "validation_fraction": 0.0, "previews": False,
            "visemes.max_clips": 3, "visemes.preview_resolution": 96,
            "visemes.match_subject_opening": False}
    base.update(overrides)
    return load_config(CONFIG_FILE, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def subject_dir(tmp_path_factory, offline_model):
    return _write_subject(tmp_path_factory.mktemp("visemes") / "subject", offline_model)


def test_corpus_reads_back_and_its_mouth_follows_the_audio(subject_dir, offline_model,
                                                           tmp_path):
    from metatalk_jax.data_pipelines.a2e_windows import a2e_windows, pseudo_frame_sources
    from metatalk_jax.data_pipelines.pseudo_corpus import open_pseudo_video
    from metatalk_jax.pseudo_video.viseme_teacher import generate_viseme_corpus

    out = str(tmp_path / "corpus")
    summary = generate_viseme_corpus(subject_dir, out, _teacher_config(previews=True))
    assert summary["clips_written"] == 3 and len(summary["parts"]) == 2   # 2 + 1 clips
    e = offline_model.dims["exp"]
    windows = a2e_windows(pseudo_frame_sources([out], "train", expression_dim=e,
                                               audio_samples=10240,
                                               subject_fingerprint="synthetic-subject"),
                          window=5, mel_columns=16)
    assert len(windows) == summary["frames_written"]
    example = windows[len(windows) // 2]
    assert example["mel"].shape == (5, 80, 16) and example["valid"].all()

    records = open_pseudo_video(out).source("train")
    rows = [records[i] for i in range(len(records))]
    ids = sorted({r["clip_id"] for r in rows})
    assert ids == [b"visemes/0000", b"visemes/0001", b"visemes/0002"]
    gap = _gap_fraction(offline_model, np.stack([r["expression"] for r in rows]))
    # Loudness around each frame's time: the 40 ms at the centre of its audio window.
    centre = 10240 // 2
    loud = np.array([np.sqrt(np.mean(r["audio"][centre - 320:centre + 320] ** 2)) for r in rows])
    corr = np.corrcoef(gap, loud)[0, 1]
    assert corr > 0.3, corr
    # Each clip starts and ends in silence (lead silence, espeak's closing pause): lips closed.
    index = np.array([r["frame_index"] for r in rows])
    last = np.r_[index[1:] == 0, True]
    assert np.all(loud[(index == 0) | last] < 0.01 * loud.max())
    assert np.abs(gap[(index == 0) | last]).max() < 0.01
    assert gap.max() > 0.08                                   # vowels open the mouth

    # The preview: one labelled tile per viseme class; "open" differs from "rest" more than
    # "bilabial" does (same mouth, closed).
    import cv2
    image = cv2.imread(summary["preview"])
    side = 96
    assert image.shape == (side + 20, side * len(visemes.VISEME_CLASSES), 3)
    tile = {n: image[:side, i * side:(i + 1) * side].astype(float)
            for i, n in enumerate(visemes.VISEME_CLASSES)}
    assert np.abs(tile["open"] - tile["rest"]).mean() > \
        3 * np.abs(tile["bilabial"] - tile["rest"]).mean() + 0.05


def test_rerun_skips_done_clips_and_cli(subject_dir, tmp_path, capsys):
    from metatalk_jax import pseudo
    from metatalk_jax.pseudo_video.viseme_teacher import generate_viseme_corpus

    out = str(tmp_path / "corpus")
    text = tmp_path / "sentences.txt"
    text.write_text("# comment\nPeter bought a blue balloon.\n\nWhy are you so happy?\n"
                    "Mama made more muffins.\n")
    first = generate_viseme_corpus(subject_dir, out, _teacher_config(
        **{"visemes.max_clips": 2, "visemes.sentences_file": str(text)}))
    assert first["clips_written"] == 2
    argv = ["--teacher", "visemes", "--subject", subject_dir, "--out", out, "--text",
            str(text), "--config.previews=False", "--config.validation_fraction=0.0"]
    assert pseudo.main(argv) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["clips_already_done"] == 2 and second["clips_written"] == 1
    assert pseudo.main(argv) == 0
    third = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert third["clips_written"] == 0 and third["clips_total"] == 3


@pytest.mark.parametrize("argv, message", [
    (["--subject", "S", "--out", "O"], "--teacher wav2lip needs --audio-dir and --wav2lip"),
    (["--subject", "S", "--out", "O", "--audio-dir", "A"], "needs --wav2lip"),
    (["--teacher", "visemes", "--subject", "S", "--out", "O", "--wav2lip", "w.pth"],
     "--wav2lip is for --teacher wav2lip"),
    (["--teacher", "visemes", "--subject", "MISSING", "--out", "O"], "not a subject directory"),
    (["--teacher", "visemes", "--subject", "SUBJECT", "--out", "O", "--text", "none.txt"],
     "sentences file not found"),
    (["--teacher", "visemes", "--subject", "SUBJECT", "--out", "O", "--max-clips", "-1"],
     "--max-clips must be positive"),
])
def test_cli_bad_inputs_are_one_line_errors(argv, message, subject_dir, tmp_path, capsys):
    from metatalk_jax import pseudo
    swap = {"MISSING": str(tmp_path / "missing"), "SUBJECT": subject_dir,
            "O": str(tmp_path / "out"), "none.txt": str(tmp_path / "none.txt")}
    assert pseudo.main([swap.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_the_teacher_opens_as_wide_as_the_subject_does(tmp_path, offline_model):
    """Two subjects whose fitted mouths differ only in how far they open (the same frames,
    the opening direction doubled): the teacher's gain doubles with them, and the calibrated
    teacher's 95th-percentile opening on the calibration sentences lands on the subject's."""
    from metatalk_jax.pseudo_video import visemes
    from metatalk_jax.pseudo_video.viseme_teacher import (VisemeTeacher, _calibration_phonemes)
    from metatalk_jax.subject.layout import load_subject
    subject = load_subject(_write_subject(tmp_path / "s", offline_model))
    plain = VisemeTeacher(subject, _teacher_config())
    shapes = plain.shapes
    opening = np.linspace(0.0, 0.05, 12)[:, None]
    gains = []
    for scale in (1.0, 2.0):
        controls = np.concatenate([scale * opening, np.zeros((12, 2))], 1)
        subject.coefficients["expression"] = shapes.expressions(controls)
        calibrated = VisemeTeacher(subject, _teacher_config(
            **{"visemes.match_subject_opening": True}))
        gains.append(calibrated.opening_gain)
        tracks = np.concatenate([visemes.control_tracks(p, n, 25.0, table=calibrated.table,
                                                        smoothing_s=0.03, min_pause_s=0.1)[:, 0]
                                 for p, n in _calibration_phonemes(25.0)])
        person = np.percentile(shapes.measure(subject.coefficients["expression"])[:, 0], 95)
        assert np.percentile(tracks, 95) == pytest.approx(person, rel=0.02)
    assert gains[1] == pytest.approx(2 * gains[0], rel=0.02)
