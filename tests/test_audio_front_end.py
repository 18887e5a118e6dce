"""The A2E's audio front end and its augmentations: the same words drive the same mouth at any
level (media/loudness.at_front_end_level, in inference and in every corpus), and the training
augmentations of train/mel_augment.py are the sound changes they claim to be, checked against
Wav2Lip's mel of the changed audio."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from metatalk_jax.media.audio_features import wav2lip_mel
from metatalk_jax.media.loudness import LOUDNESS_TARGET_LUFS, integrated_loudness
from metatalk_jax.media.speech import synthesize
from metatalk_jax.train import mel_augment

RATE = 16000


@pytest.fixture(scope="module")
def speech():
    return synthesize("Please pass me the butter and the bread.", voice="en-us",
                      rate_wpm=150).audio


def _at_peak(audio, dbfs):
    return (audio / np.max(np.abs(audio)) * 10 ** (dbfs / 20)).astype(np.float32)


def test_inference_features_do_not_depend_on_the_recording_level(speech, tmp_path,
                                                                  carphone_subject):
    """The A2E's expressions for the same speech at -30 and at -3 dBFS peak are the same
    (the front end brings both to -23 LUFS); without the front end its features differ by
    tens of dB."""
    from metatalk_jax.inference.audio_drive import expressions_from_audio, frame_mels
    from metatalk_jax.inference.trained_models import load_a2e
    from tests.support.infer_fixtures import random_a2e
    a2e = load_a2e(random_a2e(str(tmp_path / "a2e"), str(carphone_subject[0]), 10))
    quiet, loud = _at_peak(speech, -30.0), _at_peak(speech, -3.0)
    n = int(len(speech) / RATE * 25)
    drives = [expressions_from_audio(a2e, audio, n, fps=25.0, audio_samples=10240,
                                     sample_rate=RATE, show_progress=False)
              for audio in (quiet, loud)]
    np.testing.assert_allclose(drives[0], drives[1], atol=1e-4)
    raw = [frame_mels(audio, range(n), fps=25.0, audio_samples=10240, sample_rate=RATE,
                      mel_columns=a2e.mel_columns) for audio in (quiet, loud)]
    assert np.abs(raw[0] - raw[1]).mean() > 1.0        # ~27 dB apart: 2.2 units of Wav2Lip mel


def test_every_corpus_stores_its_audio_at_the_front_end_level(carphone_subject, tmp_path):
    """The viseme teacher's clips draw gains of -6..0 dB; their stored windows come out at the
    front end's loudness whatever the gain."""
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.pseudo_video.viseme_teacher import VisemeTeacher
    from metatalk_jax.subject.layout import load_subject
    config = load_config("pseudo")
    teacher = VisemeTeacher(load_subject(str(carphone_subject[0])), config)
    for index in (0, 1, 2):
        clip = teacher.clip(index, "Bob made a map of the old harbour before breakfast.")
        # each frame's window centred on its time: the middle 1/fps of each, in order, is the
        # stored clip again
        hop = int(RATE / teacher.fps)
        centre = clip.audio.shape[1] // 2
        audio = np.concatenate([w[centre - hop // 2:centre + hop - hop // 2] for w in clip.audio])
        assert integrated_loudness(audio, RATE) == pytest.approx(LOUDNESS_TARGET_LUFS, abs=1.0)


def _settings(**changes):
    base = dict(level_db=0.0, warp=0.0, warp_prob=0.0, reverb_rt60_s=(0.3, 0.3),
                reverb_prob=0.0, noise_snr_db=(20.0, 20.0), noise_prob=0.0)
    base.update(changes)
    return ml_collections.ConfigDict(base)


def _mel(audio):
    return wav2lip_mel(audio)[None, None]                        # [1, 1, 80, C]


def test_the_level_augmentation_is_the_mel_of_the_scaled_audio(speech):
    """level_db: the mel of the audio 6 dB louder, wherever neither sits on Wav2Lip's floor or
    ceiling (there the clipping is the same as the real one's)."""
    audio = _at_peak(speech, -12.0)
    key = jax.random.key(3)
    out = mel_augment.augment_mel(key, jnp.array([0]), jnp.asarray(_mel(audio)),
                                  _settings(level_db=6.0))
    gain_db = float(mel_augment.mel_to_db(out[0, 0]).mean()
                    - mel_augment.mel_to_db(jnp.asarray(_mel(audio)[0, 0])).mean())
    # the draw: find the gain it used from an unclipped band, then compare with real audio
    louder = _mel((audio * 10 ** (gain_db / 20)).astype(np.float32))
    inside = (np.abs(_mel(audio)) < 3.9) & (np.abs(louder) < 3.9)
    assert abs(gain_db) <= 6.0
    np.testing.assert_allclose(np.asarray(out)[inside], louder[inside], atol=0.02)


def test_warp_noise_and_reverb_leave_the_sound_alone_at_their_limits_and_change_it_otherwise(
        speech):
    mel = jnp.asarray(_mel(_at_peak(speech, -6.0)))
    key, ids = jax.random.key(0), jnp.array([0])
    same = {"warp": _settings(warp=0.0, warp_prob=1.0),
            "reverb": _settings(reverb_rt60_s=(1e-4, 1e-4), reverb_prob=1.0),
            "noise": _settings(noise_snr_db=(150.0, 150.0), noise_prob=1.0)}
    for name, settings in same.items():
        np.testing.assert_allclose(mel_augment.augment_mel(key, ids, mel, settings), mel,
                                   atol=1e-3, err_msg=name)
    changed = {"warp": _settings(warp=0.15, warp_prob=1.0),
               "reverb": _settings(reverb_rt60_s=(1.0, 1.0), reverb_prob=1.0),
               "noise": _settings(noise_snr_db=(10.0, 10.0), noise_prob=1.0)}
    for name, settings in changed.items():
        out = mel_augment.augment_mel(key, ids, mel, settings)
        assert float(jnp.abs(out - mel).mean()) > 0.05, name
    # Reverb only adds energy after it: a column never gets quieter, later ones louder.
    rev = mel_augment.augment_mel(key, ids, mel, changed["reverb"])
    assert float((rev - mel).min()) > -1e-4
    # Noise fills the quiet bands: the floor rises.
    noisy = mel_augment.augment_mel(key, ids, mel, changed["noise"])
    assert float(jnp.percentile(noisy, 5)) > float(jnp.percentile(mel, 5)) + 0.5


def test_an_example_draws_the_same_augmentation_wherever_it_sits_in_the_batch(speech):
    mel = jnp.asarray(np.concatenate([_mel(speech)] * 3))
    settings = _settings(level_db=6.0, warp=0.1, warp_prob=0.5, reverb_prob=0.5,
                         noise_prob=0.5)
    key = jax.random.key(7)
    a = mel_augment.augment_mel(key, jnp.array([10, 11, 12]), mel, settings)
    b = mel_augment.augment_mel(key, jnp.array([12, 10, 11]), mel, settings)
    np.testing.assert_allclose(a[0], b[1], atol=1e-6)
    np.testing.assert_allclose(a[2], b[0], atol=1e-6)
    assert float(jnp.abs(a[0] - a[1]).mean()) > 1e-3              # examples differ
