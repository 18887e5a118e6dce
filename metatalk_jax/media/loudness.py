"""Loudness of a clip (ITU-R BS.1770-4 / EBU R128 integrated loudness, LUFS) and the plain gain
that brings it to a target: the audio front end's level normalisation.

It runs on a whole clip, never on a short window (a window's gating would differ from the clip's
and its gain would pump), and identically in training and inference, so the A2E sees the same
features for the same words whatever level they were recorded at.

    loudness = integrated_loudness(audio, 16000)        # LUFS, e.g. -31.2; -inf for silence
    audio, gain_db = normalise_loudness(audio, 16000)   # now -23.0 LUFS

The measurement, for mono audio (channel weight 1.0):
  1. K-weighting: a high shelf (+4 dB above ~1.7 kHz, the head's acoustic effect) then the
     "RLB" high pass (~38 Hz). Both biquads are derived for the clip's own sample rate from
     the standard's analog prototypes (`k_weighting_filters`); at 48 kHz they are the
     coefficients tabled in BS.1770-4.
  2. Blocks of 400 ms every 100 ms (75 % overlap); block loudness -0.691 + 10 log10(mean
     square), the -0.691 chosen so a 997 Hz full-scale sine reads -3.01 LUFS like its RMS.
  3. Gates: blocks at or below -70 LUFS are dropped (absolute gate); then blocks at or below
     (loudness of the remaining blocks - 10 LU) (relative gate), so pauses do not dilute it.
  4. Integrated loudness: -0.691 + 10 log10 of the mean of the surviving blocks' mean squares.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import sosfilt

# EBU R128's broadcast programme target.
LOUDNESS_TARGET_LUFS = -23.0

BLOCK_S = 0.400                  # gating block length (BS.1770-4 section 2.8)
STEP_S = 0.100                   # block hop: 75 % overlap
_HOPS_PER_BLOCK = 4              # BLOCK_S / STEP_S
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
_LOUDNESS_OFFSET = -0.691        # so the 997 Hz full-scale sine reads -3.01 LUFS

# The analog prototypes behind BS.1770-4's 48 kHz table (the parameters libebur128 and
# pyloudnorm's documentation give): stage 1 a second-order high shelf, stage 2 a second-order
# high pass.
_SHELF_F0_HZ = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
# The shelf's gain at f0 is Vh ** this exponent (close to the geometric middle, 0.5).
_SHELF_MID_EXPONENT = 0.4996667741545416
_HIGHPASS_F0_HZ = 38.13547087602444
_HIGHPASS_Q = 0.5003270373238773


def k_weighting_filters(sample_rate: int) -> np.ndarray:
    """float64 [2, 6] second-order sections (b0, b1, b2, 1, a1, a2) of the K-weighting pre-filter
    at `sample_rate` Hz: row 0 the high shelf, row 1 the RLB high pass.

    Each is the bilinear transform of its analog prototype, pre-warped at f0 (K = tan(pi f0 /
    fs)), so f0, Q and the shelf's gains land where the prototype puts them at any rate.
    """
    if int(sample_rate) <= 2 * _SHELF_F0_HZ:
        raise ValueError(f"K-weighting needs a sample rate above {2 * _SHELF_F0_HZ:.0f} Hz, got "
                         f"{sample_rate}")
    fs = float(sample_rate)

    # High shelf H(s) = (Vh s^2 + Vb s / Q + 1) / (s^2 + s / Q + 1) in units of f0: gain 1 at
    # DC, Vh at Nyquist, Vb at f0. With s = (1 - z^-1) / (K (1 + z^-1)), after multiplying
    # through by K^2 (1 + z^-1)^2:
    k = math.tan(math.pi * _SHELF_F0_HZ / fs)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh ** _SHELF_MID_EXPONENT
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf = [(vh + vb * k / _SHELF_Q + k * k) / a0,
             2.0 * (k * k - vh) / a0,
             (vh - vb * k / _SHELF_Q + k * k) / a0,
             1.0,
             2.0 * (k * k - 1.0) / a0,
             (1.0 - k / _SHELF_Q + k * k) / a0]

    # High pass H(s) = s^2 / (s^2 + s / Q + 1). The numerator is left as (1, -2, 1), not divided
    # by a0, as in the standard's table (its pass-band gain is a0, +0.04 dB at 48 kHz; the
    # -0.691 offset was set with that filter).
    k = math.tan(math.pi * _HIGHPASS_F0_HZ / fs)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0,
                2.0 * (k * k - 1.0) / a0,
                (1.0 - k / _HIGHPASS_Q + k * k) / a0]
    return np.array([shelf, highpass], np.float64)


def _mono(audio) -> np.ndarray:
    """float64 [N] of a mono float [N] clip; a ValueError for any other shape."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [N] samples, got shape {audio.shape}")
    return audio


def block_mean_squares(audio, sample_rate: int) -> np.ndarray:
    """float64 [J]: mean square of the K-weighted `audio` (float [N] in [-1, 1] at `sample_rate`
    Hz) over each gating block, blocks of 400 ms starting every 100 ms.

    A block is exactly 4 hops (hop = round(0.1 s * rate) samples; 400 ms give or take a sample
    at rates that are not a multiple of 10 Hz), so each block's sum is the sum of 4
    consecutive hop sums. Blocks stop at the last one that fits whole; a clip
    shorter than one block (which the standard leaves undefined) is measured as one block of
    its own length, so a short clip still gets a loudness rather than -inf.
    """
    audio = _mono(audio)
    if audio.size == 0:
        return np.zeros(0, np.float64)
    weighted = sosfilt(k_weighting_filters(sample_rate), audio)
    step = max(int(round(STEP_S * sample_rate)), 1)
    block = _HOPS_PER_BLOCK * step
    if weighted.size < block:
        return np.array([np.mean(weighted * weighted)])
    hops = weighted.size // step
    hop_sums = np.square(weighted[:hops * step]).reshape(hops, step).sum(axis=1)
    count = hops - _HOPS_PER_BLOCK + 1
    block_sums = sum(hop_sums[i:i + count] for i in range(_HOPS_PER_BLOCK))
    return block_sums / block


def _loudness_of(mean_square: float) -> float:
    return _LOUDNESS_OFFSET + 10.0 * math.log10(mean_square) if mean_square > 0 else -math.inf


def integrated_loudness(audio, sample_rate: int) -> float:
    """Integrated loudness in LUFS (= LKFS) of mono float audio [N] in [-1, 1] at `sample_rate`
    Hz, by ITU-R BS.1770-4 (module docstring): K-weighting, 400 ms blocks with 75 % overlap,
    absolute gate -70 LUFS, relative gate -10 LU.

    A sine of amplitude A reads about 20 log10(A) - 3.01 LUFS at 1 kHz. -inf for an empty or
    silent clip, or one whose every block is at or below the absolute gate.
    """
    blocks = block_mean_squares(audio, sample_rate)
    with np.errstate(divide="ignore"):
        block_lufs = _LOUDNESS_OFFSET + 10.0 * np.log10(blocks)
    kept = blocks[block_lufs > ABSOLUTE_GATE_LUFS]
    if kept.size == 0:
        return -math.inf
    relative_gate = _loudness_of(float(np.mean(kept))) + RELATIVE_GATE_LU
    kept = blocks[(block_lufs > ABSOLUTE_GATE_LUFS) & (block_lufs > relative_gate)]
    # The loudest block is at or above the mean, 10 LU above the relative gate, so `kept` is
    # never empty here.
    return _loudness_of(float(np.mean(kept)))


def normalise_loudness(audio, sample_rate: int, target_lufs: float = LOUDNESS_TARGET_LUFS,
                       max_gain_db: float = 40.0,
                       peak_limit: float | None = None) -> tuple[np.ndarray, float]:
    """(float32 [N] audio scaled to `target_lufs` integrated loudness, gain in dB applied).

    audio: mono float [N] in [-1, 1] at `sample_rate` Hz, a whole clip.

    The change is one plain gain for the whole clip (no compression, no limiting), so the same
    words recorded at any level come out as the same samples and give the A2E the same
    features. Consequences, by design:
      - Clipping: with peak_limit=None (the default) the output is not clipped and may exceed
        1.0 where the clip's peak-to-loudness ratio is above 23 dB (speech's is typically 15-20
        dB, espeak-ng's ~18 dB, so this is the odd click or shout); a UserWarning reports it. The
        features are computed from the float samples, which carry values past 1.0 fine; only
        writing 16-bit PCM would clip them (audio_files.to_pcm16). Pass peak_limit (e.g. 1.0) to
        lower the gain instead until the peak is at most peak_limit: the clip then lands below
        the target, by however much its loudest sample demands. Soft limiting is not offered: it
        would reshape loud syllables only, so the same word would read differently at the
        peaks of one clip than in another.
      - max_gain_db caps the boost (default 40 dB): a clip that needs more is near-silent
        (noise, hum, a muted track), and raising its noise floor to speech level would only
        feed the A2E loud noise. Such a clip comes out below the target, with gain_db ==
        max_gain_db. Attenuation is never capped.
      - Silence (integrated loudness -inf: all blocks gated out): returned unchanged (as
        float32), gain 0.0.
    """
    samples = _mono(audio)
    measured = integrated_loudness(samples, sample_rate)
    if not math.isfinite(measured):
        return samples.astype(np.float32), 0.0
    gain_db = min(float(target_lufs) - measured, float(max_gain_db))
    peak = float(np.max(np.abs(samples)))
    if peak_limit is not None:
        if peak_limit <= 0:
            raise ValueError(f"peak_limit must be positive, got {peak_limit}")
        gain_db = min(gain_db, 20.0 * math.log10(peak_limit / peak))
    return apply_gain(samples, gain_db), gain_db


def apply_gain(audio, gain_db: float) -> np.ndarray:
    """float32 [N]: mono `audio` scaled by gain_db decibels (what normalise_loudness applies,
    for a gain measured once and applied to more of the same speech, e.g. a live stream)."""
    return (_mono(audio) * 10.0 ** (float(gain_db) / 20.0)).astype(np.float32)


def at_front_end_level(audio, sample_rate: int) -> np.ndarray:
    """float32 [N]: a whole clip as the A2E's audio front end hears it, in training (the
    subject's track, every pseudo clip) and inference (the driving audio) alike: normalised to
    LOUDNESS_TARGET_LUFS by one gain, so the same words give the same features at any level."""
    return normalise_loudness(audio, sample_rate)[0]
