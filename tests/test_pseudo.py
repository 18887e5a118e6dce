"""Pseudo-video generation (metatalk_jax/pseudo_video, `python -m metatalk_jax.pseudo`).

Expectations are independent of the code under test: ping-pong order and Wav2Lip's box rule
written out by hand, audio windows sliced straight from the wav file, frame counts from the
sample count, a known expression recovered from a render of it, pixels outside the paste box
compared with the source.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.io import wavfile

from metatalk_jax.media.loudness import at_front_end_level

from metatalk_jax.pseudo_video.audio_dir import scan_audio_dir
from metatalk_jax.media.video_read import pingpong_indices
from metatalk_jax.pseudo_video.wav2lip_run import (local_matrix, paste_feathered,
                                                   regions_of_interest, wav2lip_face_boxes)
from metatalk_jax.tracking.crop import crop_frame, crop_matrices

FPS = 25
SAMPLE_RATE = 16000


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """A voiced, syllable-modulated tone with noise (loud enough to pass the silence check)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    envelope = 0.5 * (1.0 + np.sin(2 * np.pi * 4.0 * t))
    voice = np.sin(2 * np.pi * (110 + 40 * np.sin(2 * np.pi * 1.5 * t)) * t)
    return (0.3 * envelope * (voice + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


def _write_wav(path, audio) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wavfile.write(path, SAMPLE_RATE, np.round(audio * 32767).astype(np.int16))


@pytest.fixture(scope="module")
def wav2lip_checkpoint(tmp_path_factory) -> str:
    """A random-weight Wav2Lip .pth saved as Wav2Lip's trainer saves it (torch mirror)."""
    torch = pytest.importorskip("torch")
    from tests.support.torch_wav2lip_reference import (TorchWav2Lip, randomize,
                                               save_wav2lip_style_checkpoint)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip_random.pth"
    save_wav2lip_style_checkpoint(randomize(TorchWav2Lip().eval(), seed=3), path)
    return str(path)


def _config(**overrides):
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.pseudo import CONFIG_FILE
    base = {"batch_size": 16, "fit.steps": 1, "fit.batch": 16, "clips_per_part": 1}
    base.update(overrides)
    return load_config(CONFIG_FILE, [f"{k}={v}" for k, v in base.items()])


# -- pure pieces ---------------------------------------------------------------------------------

def test_pingpong_order_matches_forward_backward_playback():
    n = 5
    one_cycle = list(range(n)) + list(range(n - 2, 0, -1))        # 0 1 2 3 4 3 2 1
    expected = (one_cycle * 4)[:23]
    assert pingpong_indices(23, n).tolist() == expected
    assert pingpong_indices(3, 1).tolist() == [0, 0, 0]
    assert pingpong_indices(4, 10).tolist() == [0, 1, 2, 3]


def test_wav2lip_boxes_pad_clip_and_average_next_five():
    boxes = np.array([[10, 20, 50, 60], [12, 20, 52, 60], [14, 22, 54, 62], [16, 22, 56, 62],
                      [18, 24, 58, 64], [20, 24, 60, 66], [22, 26, 62, 95]], np.float32)
    out = wav2lip_face_boxes(boxes, frame_size=(80, 100))
    # Hand computation: bottom + 10 clipped to H=80; box i = mean of boxes i..i+4 (the last five
    # for i >= 2), truncated: x0 of box 0 = mean(10,12,14,16,18) = 14.
    padded = [[10, 20, 50, 70], [12, 20, 52, 70], [14, 22, 54, 72], [16, 22, 56, 72],
              [18, 24, 58, 74], [20, 24, 60, 76], [22, 26, 62, 80]]
    first = np.mean(padded[0:5], 0).astype(int)
    last = np.mean(padded[2:7], 0).astype(int)
    assert out[0].tolist() == first.tolist() == [14, 21, 54, 71]
    assert out[6].tolist() == out[2].tolist() == last.tolist()


def test_scan_audio_dir_lrs2_and_flat(tmp_path):
    for rel in ("spkB/00002.wav", "spkA/00010.mp4", "spkA/00003.wav", "flat.wav",
                "notes.txt", ".hidden/x.wav"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    ids = [c.clip_id for c in scan_audio_dir(str(tmp_path))]
    assert ids == ["flat", "spkA/00003", "spkA/00010", "spkB/00002"]
    with pytest.raises(ValueError, match="not found"):
        scan_audio_dir(str(tmp_path / "missing"))


def test_feathered_paste_only_changes_the_box_and_roi_crop_equals_frame_crop():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (144, 176, 3), dtype=np.uint8)
    box = np.array([[60, 30, 120, 100]])
    matrices = crop_matrices(np.array([[92.0, 60.0]]), np.array([90.0]), 64)   # shrinking crop
    roi = regions_of_interest(box, [matrices], [64], (144, 176))[0]
    roi_image = frame[roi[1]:roi[3], roi[0]:roi[2]].copy()
    # Cropping the ROI is cropping the frame (the anti-alias blur's reach is inside the ROI).
    np.testing.assert_array_equal(crop_frame(roi_image, local_matrix(matrices[0], roi), 64),
                                  crop_frame(frame, matrices[0], 64))
    generated = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    pasted = paste_feathered(roi_image, generated, box[0], roi, feather_fraction=0.2)
    full = frame.copy()
    full[roi[1]:roi[3], roi[0]:roi[2]] = pasted
    outside = np.ones(frame.shape[:2], bool)
    outside[30:100, 60:120] = False
    np.testing.assert_array_equal(full[outside], frame[outside])
    # Far from the box edges the feather weight is 1: the pixel is the resized generated face.
    import cv2
    resized = cv2.resize(generated, (60, 70), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(full[30 + 35, 60 + 30], resized[35, 30])
    # On the box edge the source still dominates (a seamless blend, not a hard paste).
    edge = np.abs(full[30:100, 60].astype(int) - frame[30:100, 60].astype(int))
    inner = np.abs(resized[:, 0].astype(int) - frame[30:100, 60].astype(int))
    assert edge.mean() < 0.2 * inner.mean()


# -- with the prepared carphone subject ------------------------------------------------------------

def _known_expression_render(fitter, subject):
    """(frames [4], source expressions, known expressions, render output): the subject's 3DMM
    drawn by face3d.render (not the fitter's render_fit) with a known expression that differs
    from the source frames' fitted one, in the source frames' pose and lighting."""
    import jax.numpy as jnp
    from metatalk_jax.face3d.render import FaceCoeffs, render
    frames = np.array([10, 35, 60, 85])
    coeffs = subject.coefficients
    source = coeffs["expression"][frames]
    spread = coeffs["expression"].std(0) + 0.1
    known = (source + np.random.default_rng(1).normal(0, 1.0, source.shape) * spread)
    known = known.astype(np.float32)
    b = len(frames)
    face = FaceCoeffs(jnp.zeros((b, 0)), jnp.asarray(known), jnp.zeros((b, 0)),
                      jnp.asarray(coeffs["angles"][frames]),
                      jnp.asarray(coeffs["translation"][frames]),
                      jnp.asarray(coeffs["gamma"][frames]))
    out = render(fitter.model, face, fitter.camera,
                 screen_transform=jnp.asarray(fitter.screens[frames]))
    crops = np.clip(np.rint(np.asarray(out.image) * 255), 0, 255).astype(np.uint8)
    return frames, source, known, crops, np.array(out.landmarks, np.float32)


@pytest.mark.slow
def test_expression_fit_recovers_a_rendered_expression(carphone_subject):
    from metatalk_jax.pseudo_video.fit_expression import ExpressionFitter
    from metatalk_jax.recon.losses import LossWeights
    from metatalk_jax.subject.layout import load_subject

    subject = load_subject(str(carphone_subject[0]))
    # No prior here: it would (rightly) pull the answer towards zero, away from the known one.
    fitter = ExpressionFitter(subject, steps=120, batch=4, learning_rate=0.1,
                              weights=LossWeights(regularization=0.0))
    frames, source, known, crops, _ = _known_expression_render(fitter, subject)
    fitted = fitter.fit(crops, frames)                      # starts from the source expression
    before = np.abs(source - known).mean()
    after = np.abs(fitted - known).mean()
    assert after < 0.45 * before, (before, after)
    # The known expression is (close to) a fixed point of the fit: the loss is minimal there.
    again = fitter.fit(crops, frames, start=known)
    assert np.abs(again - known).mean() < 0.2 * before


@pytest.mark.slow
def test_landmark_term_recovers_the_expression_in_few_steps(carphone_subject):
    """With the 68 landmarks of the known expression (from face3d.render, an independent path
    from the fitter's render_fit), 30 steps get much closer to it than photometric-only fitting
    does in 30 steps (measured on the tiny carphone subject: error x0.61 against x0.85)."""
    from metatalk_jax.pseudo_video.fit_expression import ExpressionFitter
    from metatalk_jax.recon.losses import LossWeights
    from metatalk_jax.subject.layout import load_subject

    subject = load_subject(str(carphone_subject[0]))
    fitter = ExpressionFitter(subject, steps=30, batch=4, learning_rate=0.1,
                              weights=LossWeights(regularization=0.0))
    frames, source, known, crops, marks = _known_expression_render(fitter, subject)
    before = np.abs(source - known).mean()
    fit_marks, fit_none = fitter.fit(crops, frames, landmarks=marks), fitter.fit(crops, frames)
    with_marks, without = np.abs(fit_marks - known).mean(), np.abs(fit_none - known).mean()
    print(f"expression error {before:.3f} -> {with_marks:.3f} with landmarks, {without:.3f} "
          "without (30 steps)")
    assert with_marks < 0.7 * before and with_marks < 0.8 * without, (before, with_marks, without)
    # A frame without landmarks (NaN) is fitted photometrically; the others keep their landmarks.
    marks[1] = np.nan
    partial = fitter.fit(crops, frames, landmarks=marks)
    gap = np.abs(fit_marks - fit_none).mean(axis=1)
    print("per-frame gap", gap, "partial vs marks", np.abs(partial - fit_marks).mean(axis=1),
          "partial vs none", np.abs(partial - fit_none).mean(axis=1))
    assert np.abs(partial[1] - fit_none[1]).mean() < 0.2 * gap[1]
    assert np.all(np.abs(partial - fit_marks).mean(axis=1)[[0, 2, 3]] < 0.2 * gap[[0, 2, 3]])


@pytest.mark.slow
def test_end_to_end_resume_and_shards(carphone_subject, wav2lip_checkpoint, tmp_path):
    from metatalk_jax.data_pipelines.pseudo_corpus import open_pseudo_video
    from metatalk_jax.pseudo_video.generate import generate_pseudo_videos
    from metatalk_jax.subject.layout import load_subject

    subject_dir = str(carphone_subject[0])
    num_source = load_subject(subject_dir).num_frames
    audio_dir = tmp_path / "lrs2"
    clips = {"spk1/00001": _speech_like(0.9, 1), "spk2/00007": _speech_like(4.3, 2)}
    for clip_id, audio in clips.items():
        _write_wav(str(audio_dir / f"{clip_id}.wav"), audio)
    _write_wav(str(audio_dir / "spk3" / "silent.wav"), np.zeros(16000, np.float32))
    out = str(tmp_path / "pseudo")
    lines = []

    # Run 1 stops after one part (as a run killed after its first part would leave it).
    first = generate_pseudo_videos(subject_dir, str(audio_dir), wav2lip_checkpoint, out,
                                   _config(max_clips=1), log=lines.append)
    assert first["clips_written"] == 1 and len(first["parts"]) == 1
    # Run 2 continues with the rest; the silent clip is reported and skipped.
    second = generate_pseudo_videos(subject_dir, str(audio_dir), wav2lip_checkpoint, out,
                                    _config(), log=lines.append)
    assert second["clips_already_done"] == 1 and second["clips_written"] == 1
    assert second["clips_skipped"] == 1
    assert any(line.startswith("skip spk3/silent:") and "silent" in line for line in lines)
    os.remove(audio_dir / "spk3" / "silent.wav")      # skipped clips are retried by every run
    # Run 3 has nothing to do (and does not even load Wav2Lip: a bogus path is never opened).
    third = generate_pseudo_videos(subject_dir, str(audio_dir), "/nonexistent.pth", out,
                                   _config(), log=lines.append)
    assert third["clips_written"] == 0 and third["parts"] == []

    corpus = open_pseudo_video(out, expression_dim=10, audio_samples=10240)
    records = {}
    for split in ("train", "validation"):
        if corpus.num_frames(split):
            source = corpus.source(split)
            for i in range(len(source)):
                item = source[i]
                records.setdefault(item["clip_id"].decode(), []).append(item)
    assert sorted(records) == sorted(clips)
    one_cycle = list(range(num_source)) + list(range(num_source - 2, 0, -1))
    for clip_id, audio in clips.items():
        rate, pcm = wavfile.read(str(audio_dir / f"{clip_id}.wav"))
        # the corpus stores the clip as the A2E's front end hears it: at its loudness
        samples = at_front_end_level(pcm.astype(np.float64) / 32768.0, SAMPLE_RATE)
        count = len(samples) * FPS // SAMPLE_RATE
        items = records[clip_id]
        assert len(items) == count
        assert [int(x["frame_index"]) for x in items] == list(range(count))
        expected_source = (one_cycle * (count // len(one_cycle) + 1))[:count]
        assert [int(x["source_frame"]) for x in items] == expected_source
        for k in (0, count // 2, count - 1):
            centre = k * SAMPLE_RATE // FPS
            window = np.zeros(10240)
            lo, hi = centre - 5120, centre + 5120
            window[max(0, -lo):10240 - max(0, hi - len(samples))] = \
                samples[max(lo, 0):min(hi, len(samples))]
            np.testing.assert_allclose(items[k]["audio"], window, atol=1e-4)
            assert abs(float(items[k]["time_s"]) - k / FPS) < 1e-6
        expression = np.stack([x["expression"] for x in items])
        assert expression.shape == (count, 10) and np.all(np.isfinite(expression))
    assert len(records["spk2/00007"]) > num_source              # the ping-pong was exercised
    previews = os.listdir(os.path.join(out, "previews"))
    assert sorted(previews) == ["spk1__00001.png", "spk2__00007.png"]


def test_bad_inputs_are_one_line_errors(carphone_subject, tmp_path, capsys):
    from metatalk_jax import pseudo
    from metatalk_jax.convert.wav2lip_keys import load_wav2lip

    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pth: not a usable Wav2Lip checkpoint"):
        load_wav2lip(str(garbage))
    base = ["--subject", str(carphone_subject[0]), "--out", str(tmp_path / "out")]
    assert pseudo.main(base + ["--audio-dir", str(empty), "--wav2lip", str(garbage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no audio clips" in err[0]
    _write_wav(str(tmp_path / "audio" / "a.wav"), _speech_like(1.0, 0))
    assert pseudo.main(base + ["--audio-dir", str(tmp_path / "audio"),
                               "--wav2lip", str(garbage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not a usable Wav2Lip checkpoint" in err[-1]
    assert pseudo.main(["--subject", str(tmp_path), "--audio-dir", str(empty), "--wav2lip",
                        str(garbage), "--out", str(tmp_path / "o2")]) == 2
    assert "not a subject directory" in capsys.readouterr().err
