"""Integrated loudness and loudness normalisation (media/loudness.py).

Expectations are independent of the code under test: the 48 kHz filter coefficients tabled in
ITU-R BS.1770-4, the standard's known reading of a sine (20 log10 A - 3.01 LUFS at 1 kHz), gate
results worked out by hand from block powers, and pyloudnorm as a second implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from metatalk_jax.media import speech
from metatalk_jax.media.loudness import (LOUDNESS_TARGET_LUFS, block_mean_squares,
                                         integrated_loudness, k_weighting_filters,
                                         normalise_loudness)



def _sine(amplitude, freq_hz, seconds, sample_rate):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def _noise(rms, seconds, sample_rate, seed=0):
    return rms * np.random.default_rng(seed).standard_normal(int(seconds * sample_rate))


@pytest.fixture(scope="module")
def spoken():
    """float32 [N] espeak-ng speech at 16 kHz with its natural pauses between sentences."""
    said = speech.synthesize("Hello there. The quick brown fox jumps over the lazy dog. "
                             "Bob made a map of the old town.", voice="en-us", rate_wpm=150)
    return said.audio


def test_k_weighting_matches_the_standards_48k_table():
    # BS.1770-4, tables 1 and 2 (the pre-filter and the RLB filter at 48 kHz).
    table = np.array([[1.53512485958697, -2.69169618940638, 1.19839281085285,
                       1.0, -1.69065929318241, 0.73248077421585],
                      [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]])
    np.testing.assert_allclose(k_weighting_filters(48000), table, atol=1e-8)
    with pytest.raises(ValueError, match="sample rate"):
        k_weighting_filters(3000)


@pytest.mark.parametrize("sample_rate", [16000, 44100, 48000])
@pytest.mark.parametrize("amplitude", [1.0, 0.1, 0.01])
def test_sine_reads_its_level_minus_3_01(sample_rate, amplitude):
    # The standard's calibration: a 997 Hz sine at full scale reads -3.01 LUFS (K-weighting is
    # ~0 dB there, mono weight 1), and the scale is plain dB.
    expected = 20 * math.log10(amplitude) - 3.01
    got = integrated_loudness(_sine(amplitude, 997.0, 5.0, sample_rate), sample_rate)
    assert got == pytest.approx(expected, abs=0.1 if sample_rate != 48000 else 0.01)


def test_k_weighting_boosts_highs_and_cuts_lows():
    # Relative to 1 kHz, the K-weighting curve is ~+3.3 dB from 4 kHz up (the +4 dB shelf
    # is already ~0.7 dB up at 1 kHz) and ~-14 dB at 20 Hz (the RLB high pass).
    rate = 48000
    at_1k = integrated_loudness(_sine(0.5, 997.0, 3.0, rate), rate)
    assert 3.0 < integrated_loudness(_sine(0.5, 8000.0, 3.0, rate), rate) - at_1k < 3.6
    assert integrated_loudness(_sine(0.5, 20.0, 3.0, rate), rate) - at_1k < -12.0


def test_blocks_are_400ms_every_100ms():
    rate = 16000
    assert block_mean_squares(np.zeros(rate), rate).shape == (7,)          # 1 s: 0.0 .. 0.6
    assert block_mean_squares(np.zeros(int(2.45 * rate)), rate).shape == (21,)
    assert block_mean_squares(np.zeros(rate // 4), rate).shape == (1,)     # shorter: one block
    assert block_mean_squares(np.zeros(0), rate).shape == (0,)
    with pytest.raises(ValueError, match="mono"):
        block_mean_squares(np.zeros((100, 2)), rate)


def test_silence_is_minus_inf_and_left_unchanged():
    rate = 16000
    assert integrated_loudness(np.zeros(3 * rate), rate) == -math.inf
    assert integrated_loudness(np.zeros(0), rate) == -math.inf
    # Absolute gate: noise at about -80 LUFS has every block at or below -70 LUFS.
    faint = _noise(10 ** (-80 / 20), 3.0, rate)
    assert integrated_loudness(faint, rate) == -math.inf
    out, gain = normalise_loudness(faint, rate)
    assert gain == 0.0 and out.dtype == np.float32
    np.testing.assert_array_equal(out, faint.astype(np.float32))
    out, gain = normalise_loudness(np.zeros(rate), rate)
    assert gain == 0.0 and not out.any()


def test_gating_ignores_silence_and_much_quieter_passages():
    rate = 16000
    loud = _noise(0.1, 4.0, rate, seed=1)
    alone = integrated_loudness(loud, rate)
    # 20 s of digital silence after 4 s of noise: the plain mean square drops by 10 log10(6) =
    # 7.8 dB, the gated loudness by only the few blocks that straddle the edge (> -10 LU).
    with_silence = integrated_loudness(np.concatenate([loud, np.zeros(20 * rate)]), rate)
    assert with_silence == pytest.approx(alone, abs=0.3)
    # A passage 15 dB down is below the relative gate (-10 LU), so it is left out too.
    quieter = _noise(0.1 * 10 ** (-15 / 20), 4.0, rate, seed=2)
    assert integrated_loudness(np.concatenate([loud, quieter]), rate) == \
        pytest.approx(alone, abs=0.3)
    # One 5 dB down passes the gate: equal durations average powers 1 and 10^-0.5.
    closer = _noise(0.1 * 10 ** (-5 / 20), 4.0, rate, seed=3)
    expected = alone + 10 * math.log10((1 + 10 ** -0.5) / 2)               # alone - 1.82
    assert integrated_loudness(np.concatenate([loud, closer]), rate) == \
        pytest.approx(expected, abs=0.2)


def test_speech_pauses_do_not_dilute_its_loudness(spoken):
    rate = 16000
    padded = np.concatenate([np.zeros(10 * rate, np.float32), spoken,
                             np.zeros(10 * rate, np.float32)])
    # Only the few blocks that straddle the speech's first and last words are new (and pass
    # the gates); a mean over the whole clip would drop by 10 log10(27 s / 7 s) = 5.9 dB.
    assert integrated_loudness(padded, rate) == pytest.approx(integrated_loudness(spoken, rate),
                                                              abs=0.2)


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_agrees_with_pyloudnorm_on_noise(sample_rate):
    import pyloudnorm as pyln     # the dev extra: an independent BS.1770 meter
    white = _noise(0.05, 6.0, sample_rate, seed=4)
    # Noise falling ~6 dB per octave above 200 Hz (speech-shaped), in bursts with gaps.
    brown = np.cumsum(_noise(1.0, 6.0, sample_rate, seed=5))
    brown -= np.convolve(brown, np.ones(int(sample_rate / 200)) / int(sample_rate / 200),
                         mode="same")
    brown *= 0.1 / np.std(brown)
    brown *= (np.arange(brown.size) // (sample_rate // 2)) % 3 != 2
    for signal in (white, brown):
        # pyloudnorm's "DeMan" filters come from the same analog prototypes as ours.
        ref = pyln.Meter(sample_rate, filter_class="DeMan").integrated_loudness(signal)
        assert integrated_loudness(signal, sample_rate) == pytest.approx(ref, abs=0.01)
        if sample_rate == 48000:
            # Its default filters are fitted to the 48 kHz table (and drift away from it at
            # other rates, ~0.1 LU on white noise at 16 kHz).
            ref = pyln.Meter(sample_rate).integrated_loudness(signal)
            assert integrated_loudness(signal, sample_rate) == pytest.approx(ref, abs=0.1)


def test_agrees_with_pyloudnorm_on_speech(spoken):
    import pyloudnorm as pyln     # the dev extra: an independent BS.1770 meter
    rate = 16000
    ref = pyln.Meter(rate, filter_class="DeMan").integrated_loudness(spoken.astype(np.float64))
    assert integrated_loudness(spoken, rate) == pytest.approx(ref, abs=0.01)
    # Its default filters at the rate they were fitted to (see the noise test).
    said = speech.synthesize("The quick brown fox jumps over the lazy dog.", voice="en-us",
                             rate_wpm=150, sample_rate=48000).audio.astype(np.float64)
    assert integrated_loudness(said, 48000) == \
        pytest.approx(pyln.Meter(48000).integrated_loudness(said), abs=0.1)


def test_normalise_reaches_the_target_whatever_the_input_level(spoken):
    rate = 16000
    results = []
    for peak_dbfs in (-30.0, -3.0):
        audio = spoken * (10 ** (peak_dbfs / 20) / np.max(np.abs(spoken)))
        out, gain_db = normalise_loudness(audio, rate)
        assert out.dtype == np.float32 and out.shape == audio.shape
        assert integrated_loudness(out, rate) == pytest.approx(LOUDNESS_TARGET_LUFS, abs=0.01)
        # The gain is exactly the ratio of output to input, in dB.
        assert 20 * math.log10(np.max(np.abs(out)) / np.max(np.abs(audio))) == \
            pytest.approx(gain_db, abs=1e-3)
        results.append((out, gain_db))
    (quiet_out, quiet_gain), (loud_out, loud_gain) = results
    assert quiet_gain - loud_gain == pytest.approx(27.0, abs=1e-3)
    # Level invariance: the same words come out as the same samples.
    np.testing.assert_allclose(quiet_out, loud_out, atol=1e-5)
    assert LOUDNESS_TARGET_LUFS == -23.0


def test_normalise_keeps_one_plain_gain_past_full_scale():
    rate = 16000
    # Quiet noise with one loud click: reaching -23 LUFS takes the click past full scale.
    audio = _noise(0.003, 4.0, rate, seed=6)
    audio[rate] = 0.5
    out, gain_db = normalise_loudness(audio, rate)
    assert np.max(np.abs(out)) > 1.0                        # not clipped, not soft-limited
    np.testing.assert_allclose(out, audio * 10 ** (gain_db / 20), rtol=1e-6)
    assert integrated_loudness(out, rate) == pytest.approx(-23.0, abs=0.01)
    # peak_limit lowers the gain instead, so the clip lands below the target.
    limited, limited_gain = normalise_loudness(audio, rate, peak_limit=1.0)
    assert np.max(np.abs(limited)) == pytest.approx(1.0, abs=1e-6)
    assert limited_gain < gain_db
    assert integrated_loudness(limited, rate) == pytest.approx(-23.0 - (gain_db - limited_gain),
                                                               abs=0.01)
    np.testing.assert_allclose(limited, audio * 10 ** (limited_gain / 20), rtol=1e-6)
    with pytest.raises(ValueError, match="peak_limit"):
        normalise_loudness(audio, rate, peak_limit=0.0)


def test_normalise_caps_the_boost_and_never_caps_a_cut():
    rate = 16000
    faint = _noise(10 ** (-62 / 20), 3.0, rate, seed=7)     # ~ -62 LUFS: needs ~+39 dB
    measured = integrated_loudness(faint, rate)
    assert -66.0 < measured < -58.0
    out, gain_db = normalise_loudness(faint, rate, max_gain_db=20.0)
    assert gain_db == 20.0
    assert integrated_loudness(out, rate) == pytest.approx(measured + 20.0, abs=0.01)
    hot = _noise(0.3, 3.0, rate, seed=8)                    # ~ -8 LUFS: a cut of ~15 dB
    out, gain_db = normalise_loudness(hot, rate, target_lufs=-40.0, max_gain_db=0.0)
    assert gain_db < -25.0
    assert integrated_loudness(out, rate) == pytest.approx(-40.0, abs=0.01)
