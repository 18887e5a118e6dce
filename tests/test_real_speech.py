"""The audio front end on real human speech (metatalk_jax/real_speech.py: recordings from the
package registries, none of them synthetic): voice activity against a forced alignment and
against a speech's known pauses, and the loudness step on a quiet meeting recording."""

from __future__ import annotations

import numpy as np
import pytest

from metatalk_jax.media.audio_files import load_audio
from metatalk_jax.media.loudness import (LOUDNESS_TARGET_LUFS, at_front_end_level,
                                         integrated_loudness)
from metatalk_jax.media.voice_activity import voice_activity
from metatalk_jax.real_speech import audiobook_phones, real_speech

RATE, FPS = 16000, 25.0


def _activity(audio):
    return voice_activity(audio, RATE, FPS, int(len(audio) / RATE * FPS))


def _pauses(active):
    """[(start frame, end frame)] of the silent runs."""
    edges = np.flatnonzero(np.diff(np.r_[1, active.astype(int), 1]))
    return list(zip(edges[::2], edges[1::2]))


def test_an_audiobook_reader_with_no_pause_is_all_speech_where_the_aligner_hears_words():
    """pocketsphinx's alignment of the LibriVox clip has no silence of 0.4 s or more (its
    longest is 0.3 s at the end): voice activity must mark the words' frames as speech."""
    audio = load_audio(real_speech("audiobook"), RATE)
    active = _activity(audio)
    phones = audiobook_phones()
    assert not [p for p in phones if p[2] == "SIL" and p[1] - p[0] >= 0.4]
    times = np.arange(len(active)) / FPS
    in_words = np.zeros(len(active), bool)
    for start, end, phone in phones:
        if phone != "SIL":
            in_words |= (times >= start) & (times < end)
    assert active[in_words].mean() > 0.97


def test_jfks_pauses_are_found_at_any_level():
    """The inaugural address clip pauses between its phrases ("And so, my fellow Americans --
    ask not what your country can do for you -- ask what you can do for your country"): at
    least three pauses of 0.4 s or more, the same frames at the recording's level and 30 dB
    below it."""
    audio = load_audio(real_speech("jfk"), RATE)
    loud, quiet = _activity(audio), _activity(audio * 10 ** (-30 / 20))
    pauses = [p for p in _pauses(loud) if (p[1] - p[0]) / FPS >= 0.4]
    assert len(pauses) >= 3, pauses
    assert (loud == quiet).mean() > 0.98
    assert loud.mean() > 0.6                                  # mostly speech


@pytest.mark.parametrize("name", ["meeting_f", "meeting_m"])
def test_a_quiet_meeting_recording_comes_to_the_front_end_level(name):
    """The AMI meeting clips are recorded quietly (about -35 to -43 LUFS); the front end brings
    each to -23 LUFS with one gain (the samples keep their shape)."""
    audio = load_audio(real_speech(name), RATE)
    measured = integrated_loudness(audio, RATE)
    assert measured < -30.0
    heard = at_front_end_level(audio, RATE)
    # (not exact: blocks the -70 LUFS absolute gate dropped before the gain count after it)
    assert integrated_loudness(heard, RATE) == pytest.approx(LOUDNESS_TARGET_LUFS, abs=0.1)
    gain = heard[np.argmax(np.abs(audio))] / audio[np.argmax(np.abs(audio))]
    np.testing.assert_allclose(heard, audio * gain, rtol=1e-5, atol=1e-7)
