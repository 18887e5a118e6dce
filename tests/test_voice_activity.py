"""Per-frame voice activity and the silence blending weight (media/voice_activity.py).

The clips are espeak-ng phrases, each trimmed to its spoken phonemes, joined by inserted digital
silences of known lengths, so the truth for every frame is known: frames centred inside a pause of
0.6 s or more are silence, all others speech (0.15 s gaps between words included). Frame edges
may be off by `EDGE_FRAMES` frames next to a pause, where the frame's span straddles the boundary.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from metatalk_jax.media import speech
from metatalk_jax.media.audio_files import rms_dbfs
from metatalk_jax.media.frame_audio_windows import audio_window
from metatalk_jax.media.voice_activity import (activity_threshold, frame_levels,
                                               silence_weight, voice_activity)

RATE = 16000
FPS = 25
EDGE_FRAMES = 2



def _said(text):
    """float32 audio of `text` from its first to its last spoken (non-pause) phoneme."""
    said = speech.synthesize(text, voice="en-us", rate_wpm=150, sample_rate=RATE)
    spoken = [p for p in said.phonemes if not p[2].startswith("_")]
    return said.audio[int(round(spoken[0][0] * RATE)):int(round(spoken[-1][1] * RATE))]


def _join(pieces):
    """(float32 audio, [(start_s, end_s)] of each inserted pause) from phrases and pause
    lengths in seconds."""
    audio, pauses, at = [], [], 0
    for piece in pieces:
        if isinstance(piece, float):
            samples = int(round(piece * RATE))
            pauses.append((at / RATE, (at + samples) / RATE))
            piece = np.zeros(samples, np.float32)
        audio.append(piece)
        at += len(piece)
    return np.concatenate(audio), pauses


@pytest.fixture(scope="module")
def clip():
    """(audio, pauses, num_frames): 0.15 s word gaps, a 0.6 s and a 2 s pause."""
    audio, pauses = _join([_said("Bob made a map"), 0.15, _said("of the old town"), 0.6,
                           _said("and then he went home"), 2.0, _said("to sleep for a while"),
                           0.15, _said("before dinner")])
    return audio, pauses, int(len(audio) / RATE * FPS)


def _truth(pauses, num_frames, min_pause_s=0.4):
    """(bool [T] expected speech, bool [T] frames near a long pause's edge: not checked)."""
    times = np.arange(num_frames) / FPS
    expected = np.ones(num_frames, bool)
    near_edge = np.zeros(num_frames, bool)
    for start, end in pauses:
        if end - start < min_pause_s:
            continue
        expected &= ~((times >= start) & (times < end))
        for edge in (start, end):
            near_edge |= np.abs(times - edge) <= EDGE_FRAMES / FPS
    return expected, near_edge


def _check_against_truth(active, pauses):
    expected, near_edge = _truth(pauses, active.size)
    wrong = np.flatnonzero((active != expected) & ~near_edge)
    assert wrong.size == 0, f"frames {wrong.tolist()} decided wrongly"
    # Each long pause is found as silence, not only spared from errors.
    for start, end in pauses:
        inside = np.flatnonzero((np.arange(active.size) / FPS >= start) &
                                (np.arange(active.size) / FPS < end))
        if end - start >= 0.4:
            assert not active[inside[EDGE_FRAMES:-EDGE_FRAMES]].any()
            assert (~active[inside]).sum() >= inside.size - 2 * EDGE_FRAMES
        else:
            assert active[inside].all(), f"word gap at {start:.2f} s taken for a pause"


# -- frame levels ------------------------------------------------------------------------------

def test_frame_levels_are_the_rms_of_audio_window_spans():
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * RATE).astype(np.float32)
    audio[RATE // 2:RATE] = 0.0                          # a silent half second
    levels = frame_levels(audio, RATE, FPS, 60)
    span = RATE // FPS
    for k in range(1, 50):                               # whole windows inside the audio
        window = audio_window(audio, k / FPS, span, RATE)
        expected = rms_dbfs(window)
        if math.isinf(expected):
            assert levels[k] == -math.inf
        else:
            assert levels[k] == pytest.approx(expected, abs=1e-6)
    # Frame 0 is centred on t = 0: its level is that of its half inside the audio.
    assert levels[0] == pytest.approx(rms_dbfs(audio[:span // 2]), abs=1e-6)
    assert levels[13:25].max() == -math.inf              # 0.52 .. 0.96 s: zeros only
    # Frame 50 (t = 2 s) has its first half inside the audio, 51 on have nothing.
    assert levels[50] == pytest.approx(rms_dbfs(audio[-span // 2:]), abs=1e-6)
    assert levels[51:].max() == -math.inf
    # A full-scale sine (a whole number of cycles per frame) reads -3.01 dB.
    sine = np.sin(2 * np.pi * 500.0 * np.arange(RATE) / RATE)
    np.testing.assert_allclose(frame_levels(sine, RATE, FPS, 24)[1:], -3.0103, atol=1e-3)


def test_threshold_sits_between_floor_and_speech():
    levels = np.concatenate([np.full(50, -60.0), np.full(50, -20.0)])
    floor_db, speech_db, threshold_db = activity_threshold(levels)
    assert (floor_db, speech_db) == (-60.0, -20.0)
    assert floor_db + 6.0 <= threshold_db < speech_db
    # Digital zero is held DYNAMIC_RANGE_DB below speech, so it does not set the threshold.
    with_zeros = activity_threshold(np.concatenate([np.full(50, -np.inf), levels[50:]]))
    assert with_zeros == activity_threshold(np.concatenate([np.full(50, -80.0), levels[50:]]))
    assert activity_threshold(np.full(10, -np.inf))[2] == math.inf        # nothing to hear
    assert activity_threshold(np.full(10, -30.0))[2] == -math.inf         # no floor at all


# -- voice activity ----------------------------------------------------------------------------

def test_pauses_are_found_and_word_gaps_are_speech(clip):
    audio, pauses, num_frames = clip
    active = voice_activity(audio, RATE, FPS, num_frames)
    assert active.dtype == bool and active.shape == (num_frames,)
    _check_against_truth(active, pauses)


def test_same_decisions_at_any_level(clip):
    audio, pauses, num_frames = clip
    peak = np.max(np.abs(audio))
    decisions = [voice_activity(audio * np.float32(10 ** (dbfs / 20) / peak), RATE, FPS,
                                num_frames) for dbfs in (-40.0, -3.0)]
    np.testing.assert_array_equal(decisions[0], decisions[1])
    _check_against_truth(decisions[0], pauses)


def test_pauses_are_found_under_steady_background_noise(clip):
    audio, pauses, num_frames = clip
    speech_rms = np.sqrt(np.mean(np.square(audio[np.abs(audio) > 0], dtype=np.float64)))
    noise = np.random.default_rng(1).standard_normal(audio.size) * speech_rms * 10 ** (-20 / 20)
    noisy = (audio + noise).astype(np.float32)
    active = voice_activity(noisy, RATE, FPS, num_frames)
    _check_against_truth(active, pauses)
    # The noise fills the pauses: the floor is the noise's level, not digital zero.
    floor_db, _, threshold_db = activity_threshold(frame_levels(noisy, RATE, FPS, num_frames))
    assert floor_db == pytest.approx(20 * np.log10(speech_rms) - 20.0, abs=1.0)
    assert threshold_db > floor_db + 6.0 - 1e-9


def test_all_speech_clip_has_no_silence():
    audio, _ = _join([_said("The quick brown fox jumps over the lazy dog"), 0.15,
                      _said("and Bob made a map of the old town")])
    num_frames = int(len(audio) / RATE * FPS)
    assert voice_activity(audio, RATE, FPS, num_frames).all()
    # A steady sound with no floor under it is all "speech" too.
    hum = 0.3 * np.sin(2 * np.pi * 150.0 * np.arange(2 * RATE) / RATE)
    assert voice_activity(hum, RATE, FPS, 50).all()


def test_short_blip_in_a_pause_is_not_speech(clip):
    audio, pauses, num_frames = clip
    start, end = pauses[2]                                        # the 2 s pause
    blipped = audio.copy()
    vowel = _said("ah")
    blip = vowel[vowel.size // 2:vowel.size // 2 + int(0.06 * RATE)]  # 60 ms mid-vowel
    # Its first and last 10 ms fall in the spans of frames k and k + 2: it lights 3 frames.
    k = int((start + end) / 2 * FPS)
    at = int(round(((k + 0.5) / FPS - 0.01) * RATE))
    blipped[at:at + blip.size] = blip
    levels = frame_levels(blipped, RATE, FPS, num_frames)
    assert (levels > activity_threshold(levels)[2])[k:k + 3].all()      # loud enough alone
    active = voice_activity(blipped, RATE, FPS, num_frames)
    _check_against_truth(active, pauses)


def test_silence_and_empty_audio():
    assert not voice_activity(np.zeros(RATE, np.float32), RATE, FPS, 25).any()
    assert voice_activity(np.zeros(0, np.float32), RATE, FPS, 0).shape == (0,)


# -- silence weight ----------------------------------------------------------------------------

MAX_STEP = math.pi / (2 * 0.12 * FPS) + 1e-9        # steepest raised-cosine step, 0.12 s ramp


def _check_smooth(weight, active):
    assert weight.min() >= 0.0 and weight.max() <= 1.0
    assert np.all(weight[active] == 0.0)
    assert np.max(np.abs(np.diff(weight))) <= MAX_STEP


def test_silence_weight_on_the_clip(clip):
    audio, pauses, num_frames = clip
    active = voice_activity(audio, RATE, FPS, num_frames)
    weight = silence_weight(active, FPS)
    assert weight.shape == (num_frames,)
    _check_smooth(weight, active)
    start, end = pauses[2]                                        # the 2 s pause
    middle = slice(int(start * FPS) + 6, int(end * FPS) - 6)
    np.testing.assert_array_equal(weight[middle], 1.0)
    # The first silent frame after speech starts low: no jump from the talking mouth.
    first = int(np.flatnonzero(~active[int(start * FPS) - 3:])[0]) + int(start * FPS) - 3
    assert 0.0 < weight[first] < 0.2


def test_silence_weight_in_a_short_pause_rises_and_falls_smoothly():
    active = np.ones(40, bool)
    active[15:25] = False                                          # 0.4 s pause at 25 fps
    weight = silence_weight(active, FPS)
    _check_smooth(weight, active)
    pause = weight[15:25]
    assert np.all(np.diff(pause[:4]) > 0) and np.all(np.diff(pause[6:]) < 0)
    assert np.all(np.diff(pause[:6]) >= 0) and np.all(np.diff(pause[4:]) <= 0)
    np.testing.assert_allclose(pause, pause[::-1], atol=1e-12)    # symmetric
    assert pause[0] < 0.2 and pause.max() == pytest.approx(1.0)
    # A pause shorter than two ramps still rises and falls, without reaching 1.
    active[15:25] = True
    active[18:21] = False
    weight = silence_weight(active, FPS)
    _check_smooth(weight, active)
    assert 0.0 < weight[18] < weight[19] < 1.0 and weight[20] == weight[18]


def test_silence_weight_at_clip_ends_and_other_rates():
    active = np.zeros(30, bool)
    active[10:20] = True
    weight = silence_weight(active, FPS)
    assert weight[0] == 1.0 and weight[-1] == 1.0                  # resting at both ends
    assert np.all(np.diff(weight[:10]) <= 0) and np.all(np.diff(weight[20:]) >= 0)
    # The ramp lasts ramp_s seconds whatever the frame rate.
    for fps in (25, 60):
        active = np.concatenate([np.ones(fps, bool), np.zeros(fps, bool)])
        weight = silence_weight(active, fps, ramp_s=0.2)
        ramp_frames = np.flatnonzero((weight > 0) & (weight < 1))
        assert ramp_frames.size == pytest.approx(0.2 * fps, abs=1)
        assert np.max(np.diff(weight)) <= math.pi / (2 * 0.2 * fps) + 1e-9
    assert not silence_weight(np.ones(5, bool), FPS).any()
    assert np.all(silence_weight(np.zeros(5, bool), FPS) == 1.0)
    assert silence_weight(np.zeros(0, bool), FPS).shape == (0,)
    with pytest.raises(ValueError):
        silence_weight(np.ones((2, 3), bool), FPS)
