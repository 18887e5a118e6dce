"""The A2E: baseline layers against torch, exact per-frame features, batch mixing, and the
acceptance run: on a synthetic corpus whose expressions are a known function of the audio (each
coefficient = the smoothed log energy of one frequency band around the frame), the tiny A2E
trained through the engine's train_and_evaluate reaches a held-out Pearson correlation >= 0.9.
"""

from __future__ import annotations

import json
import os
import re
import time

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.signal

from metatalk_jax.data_pipelines.pseudo_corpus import PseudoClip, PseudoVideoWriter
from metatalk_jax.data_pipelines.subject_frames import write_target_video_shards
from metatalk_jax.models.a2e import AudioDVPA2E, AudioDVPHead, make_a2e
from metatalk_jax.media.frame_audio_windows import audio_window
from metatalk_jax.train.a2e_task import A2ETask, pearson_from_moments
from metatalk_jax.train.loop import train_and_evaluate
from tests.test_previews import assert_labelled_preview
from tests.support.step_reads import keys_read_by_steps
from tests.support.train_runs import metric_rows

from metatalk_jax.config_loading import load_config

SR, FPS, N = 16000, 25.0, 10240
BANDS_HZ = ((200, 450), (500, 900), (1000, 1800), (2000, 3600))
E = len(BANDS_HZ)
FINGERPRINT = "synthetic-a2e-subject"
TINY = "a2e:tiny"


# -- the synthetic corpus -------------------------------------------------------------------------

def syllable_audio(seconds: float, rng) -> np.ndarray:
    """Tone bursts 60-200 ms long, each one or two tones from random bands at random loudness,
    with Hann envelopes and short pauses: float32 [seconds * SR]."""
    out = np.zeros(int(seconds * SR), np.float32)
    start = 0
    while start < out.size:
        length = int(rng.uniform(0.06, 0.2) * SR)
        t = np.arange(length) / SR
        burst = np.zeros(length)
        if rng.random() > 0.15:                                   # 15% pauses
            for band in rng.choice(E, size=rng.integers(1, 3), replace=False):
                freq = rng.uniform(*BANDS_HZ[band])
                burst += rng.uniform(0.02, 0.3) * np.sin(2 * np.pi * freq * t)
        piece = (burst * np.hanning(length))[: out.size - start]
        out[start:start + piece.size] = piece
        start += length
    return out + 1e-3 * rng.standard_normal(out.size).astype(np.float32)


def band_expressions(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """[T, E]: coefficient k of frame i = log10 of band k's energy, smoothed over 50 ms, at
    time i / FPS (affinely rescaled)."""
    freqs, times, spec = scipy.signal.stft(audio, SR, nperseg=512, noverlap=512 - 160,
                                           boundary="zeros")
    power = np.abs(spec) ** 2
    kernel = np.hanning(7)[1:-1]
    out = np.zeros((num_frames, E), np.float32)
    for k, (lo, hi) in enumerate(BANDS_HZ):
        band = power[(freqs >= lo) & (freqs < hi)].sum(0)
        band = np.convolve(band, kernel / kernel.sum(), mode="same")
        at = np.clip(np.searchsorted(times, np.arange(num_frames) / FPS), 0, band.size - 1)
        out[:, k] = (np.log10(1e-4 + band[at]) + 2.0) / 1.5
    return out


def frame_audio(audio: np.ndarray, num_frames: int) -> np.ndarray:
    return np.stack([audio_window(audio, i / FPS, N, SR) for i in range(num_frames)])


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def write_subject(path, seconds: float, rng) -> None:
    """A subject directory whose target video is `seconds` of synthetic speech (8 px crops)."""
    t = int(seconds * FPS)
    audio = syllable_audio(seconds, rng)
    expression = band_expressions(audio, t)
    windows = frame_audio(audio, t)
    crop, mask = png(np.zeros((8, 8, 3), np.uint8)), png(np.zeros((8, 8), np.uint8))

    def frames():
        for i in range(t):
            yield {"frame_index": i, "time_s": i / FPS, "face_crop": crop, "face_mask": mask,
                   "mouth_mask": mask, "expression": expression[i],
                   "gamma": np.zeros(27), "angles": np.zeros(3), "translation": np.zeros(3),
                   "crop_transform": np.eye(2, 3), "audio": windows[i]}

    os.makedirs(path, exist_ok=True)
    write_target_video_shards(frames, data_dir=os.path.join(path, "tfds"), num_frames=t,
                              crop_size=8, expression_dim=E, audio_samples=N)
    np.savez(os.path.join(path, "coefficients.npz"), expression=expression,
             gamma=np.zeros((t, 27)), angles=np.zeros((t, 3)), translation=np.zeros((t, 3)))
    np.savez(os.path.join(path, "crops.npz"), centers=np.zeros((t, 2)))
    np.savez(os.path.join(path, "landmarks.npz"), landmarks=np.zeros((t, 68, 2)))
    with open(os.path.join(path, "subject.json"), "w") as f:
        json.dump({"format": "metatalk_jax.subject", "format_version": 1, "num_frames": t,
                   "fps": FPS, "sample_rate": SR, "audio_samples": N,
                   "fingerprint": FINGERPRINT, "model": {"name": "procedural"}}, f)


def write_pseudo(root, clips: int, seconds: float, rng, validation=()) -> None:
    writer = PseudoVideoWriter(root, expression_dim=E, audio_samples=N,
                               subject_fingerprint=FINGERPRINT)
    out = []
    for c in range(clips):
        t = int(seconds * FPS)
        audio = syllable_audio(seconds, rng)
        out.append(PseudoClip(f"spk{c:02d}/00001", band_expressions(audio, t),
                              frame_audio(audio, t), np.arange(t) % 50,
                              split="validation" if c in validation else "train"))
    writer.write_part(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(subject dir, pseudo root): 30 s of target speech, 12 pseudo clips of 3 s (2 held out)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("a2e")
    write_subject(str(root / "subject"), 30.0, rng)
    write_pseudo(str(root / "pseudo"), 12, 3.0, rng, validation=(0, 1))
    return str(root / "subject"), str(root / "pseudo")


def tiny_config(subject, *overrides):
    return load_config(TINY, [f"data.subject={subject}", "data.model=procedural",
                              "mesh.fsdp=2", "mesh.min_fsdp_size=256", *overrides])


# -- the models ----------------------------------------------------------------------------------

def test_audiodvp_head_layers_and_parameter_count():
    """REFERENCES: Conv1d 7->5->3->1 (k3, no activation) -> Linear 250->64."""
    head = AudioDVPHead(64)
    params = head.init(jax.random.key(0), jnp.zeros((2, 7, 256)))["params"]
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {"conv0": {"kernel": (3, 7, 5), "bias": (5,)},
                      "conv1": {"kernel": (3, 5, 3), "bias": (3,)},
                      "conv2": {"kernel": (3, 3, 1), "bias": (1,)},
                      "fc": {"kernel": (250, 64), "bias": (64,)}}
    by_hand = (7 * 5 * 3 + 5) + (5 * 3 * 3 + 3) + (3 * 1 * 3 + 1) + (250 * 64 + 64)
    assert by_hand == 16232
    assert sum(x.size for x in jax.tree.leaves(params)) == by_hand


def test_audiodvp_head_matches_torch_conv1d_stack():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    convs = [torch.nn.Conv1d(i, o, 3) for i, o in ((7, 5), (5, 3), (3, 1))]
    fc = torch.nn.Linear(250, 64)
    x = torch.randn(3, 7, 256)
    with torch.no_grad():
        y = x
        for conv in convs:
            y = conv(y)
        expected = fc(y[:, 0]).numpy()
    params = {f"conv{i}": {"kernel": jnp.asarray(c.weight.detach().numpy().transpose(2, 1, 0)),
                           "bias": jnp.asarray(c.bias.detach().numpy())}
              for i, c in enumerate(convs)}
    params["fc"] = {"kernel": jnp.asarray(fc.weight.detach().numpy().T),
                    "bias": jnp.asarray(fc.bias.detach().numpy())}
    got = AudioDVPHead(64).apply({"params": params}, jnp.asarray(x.numpy()))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)


def test_baseline_uses_each_frames_seven_frame_context():
    """Position t of the sliding baseline = the head on features t-3..t+3 (zeros outside)."""
    model = AudioDVPA2E(5, (4, 8))
    mel = jax.random.normal(jax.random.key(1), (1, 9, 80, 8))
    valid = jnp.ones((1, 9), bool)
    params = model.init(jax.random.key(2), mel, valid)["params"]
    full = model.apply({"params": params}, mel, valid)
    centre = model.apply({"params": params}, mel[:, 1:8], valid[:, 1:8])
    np.testing.assert_allclose(np.asarray(full[:, 4]), np.asarray(centre[:, 3]), atol=1e-5)
    assert full.shape == (1, 9, 5)


def test_make_a2e_kinds():
    cfg = ml_collections.ConfigDict({"kind": "metatalk", "expression_dim": 64,
                                     "encoder_channels": (4, 8), "features": 16,
                                     "dilations": (1, 2), "dropout": 0.0, "dtype": "float32"})
    mel, valid = jnp.zeros((2, 5, 80, 16)), jnp.ones((2, 5), bool)
    model = make_a2e(cfg, 7)
    out = model.apply(model.init(jax.random.key(0), mel, valid), mel, valid)
    assert out.shape == (2, 5, 7)
    cfg.kind = "nope"
    with pytest.raises(ValueError, match="unknown A2E model.kind 'nope'"):
        make_a2e(cfg)


# -- features and batches ------------------------------------------------------------------------

def test_batches_carry_exactly_what_the_steps_read(corpus):
    """Every key of a training and of an evaluation batch is read by the steps, and nothing
    else is uploaded to the devices each step."""
    subject, pseudo_root = corpus
    task = A2ETask(tiny_config(subject, f"data.pseudo_dirs={pseudo_root}", "data.pseudo_ratio=0.5",
                               "data.eval_on=both"))
    train = next(iter(task.train_batches(seed=0, process_index=0, process_count=1)))
    evaluation = next(iter(task.eval_batches(process_index=0, process_count=1)))
    assert set(train) == set(evaluation) == {"mel", "expression", "valid", "example_valid",
                                             "example_id"}
    # example_id is the stream's row identity, added to every batch (the renderer's
    # augmentations read it); the A2E's steps read the rest.
    assert keys_read_by_steps(task, train) == set(train) - {"example_id"}


def test_pseudo_ratio_without_pseudo_data_is_a_clear_error(corpus):
    subject, _ = corpus
    with pytest.raises(ValueError, match="pseudo_ratio=0.5 but no pseudo data"):
        A2ETask(tiny_config(subject, "data.pseudo_ratio=0.5"))


# -- acceptance ----------------------------------------------------------------------------------

def test_tiny_a2e_learns_band_energies_to_pearson_0_9(corpus, tmp_path):
    subject, pseudo_root = corpus
    steps = 120
    config = tiny_config(subject, f"total_steps={steps}", f"eval_every_steps={steps}",
                         "eval_at_start=True", f"preview_every_steps={steps}",
                         f"checkpoint_every_steps={steps}", "log_every_steps=40",
                         f"data.pseudo_dirs={pseudo_root}", "data.pseudo_ratio=0.5",
                         "data.eval_on=both")
    task = A2ETask(config)
    started = time.time()
    result = train_and_evaluate(config, str(tmp_path), task=task, log=lambda *_: None)
    elapsed = time.time() - started
    assert result.status == "finished" and result.step == steps
    evals = {row["step"]: row for row in metric_rows(tmp_path) if "eval/mse" in row}
    # The engine reports the task's finalised metrics (pearson from the moments), in the log too.
    before = {k[5:]: v for k, v in evals[0].items() if k.startswith("eval/")}
    after = result.eval_metrics
    assert ("pearson" in before and "corr_pt" not in before
            and evals[steps]["eval/pearson"] == after["pearson"])
    print(f"a2e acceptance: {elapsed:.1f} s, pearson {before['pearson']:.3f} -> "
          f"{after['pearson']:.3f}, mse {before['mse']:.4f} -> {after['mse']:.4f}, "
          f"mouth {after['mouth_rms_mm']:.3f} mm")
    assert after["pearson"] >= 0.9
    assert after["mse"] < 0.3 * before["mse"] and after["mouth_rms"] < before["mouth_rms"]
    preview = cv2.imread(str(tmp_path / "previews" / f"preview_{steps:07d}.png"))
    assert_labelled_preview(preview, config.preview_examples, 4 * 42, 160, columns=1)


def test_pearson_from_moments_matches_numpy():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(500)
    t = 0.6 * p + rng.standard_normal(500)
    means = dict(corr_p=p.mean(), corr_t=t.mean(), corr_pp=(p * p).mean(), corr_tt=(t * t).mean(),
                 corr_pt=(p * t).mean())
    assert abs(pearson_from_moments(means) - np.corrcoef(p, t)[0, 1]) < 1e-9


def test_resuming_with_another_architecture_is_one_line_exit_2(corpus, tmp_path, capsys):
    """A work dir's checkpoint restored into a model of another size: one line, exit 2."""
    from metatalk_jax.train.__main__ import main as train_main
    subject, _ = corpus
    config = tiny_config(subject, "total_steps=2", "checkpoint_every_steps=2",
                         "eval_every_steps=0", "preview_every_steps=0", "eval_at_start=False",
                         "data.pseudo_ratio=0.0")
    result = train_and_evaluate(config, str(tmp_path), task=A2ETask(config), log=lambda *_: None)
    assert result.step == 2
    capsys.readouterr()
    code = train_main(["--config", TINY, "--workdir", str(tmp_path),
                       f"--config.data.subject={subject}", "--config.data.model=procedural",
                       "--config.data.pseudo_ratio=0.0", "--config.total_steps=4",
                       "--config.model.features=48"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1, err
    # The first leaf the 48 features reshape, with its shape in the checkpoint and in the model.
    assert re.search(r"has shape \([\d, ]*\) in the checkpoint, \([\d, ]*\b48\b[\d, ]*\) in the "
                     r"config's model", err[0]), err[0]
    assert "config.json" in err[0]
