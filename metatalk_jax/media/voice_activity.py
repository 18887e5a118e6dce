"""Where the driving audio is speech, per video frame, and how far each frame is into a pause:
the switch that blends a talking mouth to a resting one.

    levels = frame_levels(audio, 16000, fps=25, num_frames=T)          # [T] dBFS
    active = voice_activity(audio, 16000, fps=25, num_frames=T)        # [T] bool, True: speech
    weight = silence_weight(active, fps=25)                            # [T] in [0, 1]

Frame k's level is the RMS of the audio in the 1/fps-long span centred on t = k / fps, the same
centre as the frame's audio window (frame_audio_windows.audio_window), so the decision for
frame k is about the sound the A2E hears for frame k.

No threshold is fixed in dB. Each clip's thresholds come from its own levels: the speech level is
a high percentile of its frame levels, the floor (background noise, or digital silence) a low
one, and a frame is speech when it is loud enough above the floor (`activity_threshold`). So a
clip gets the same decisions at -40 dBFS as at -3 dBFS, and pauses filled with steady
background noise are found as well as digital-zero ones. Runs are then cleaned up by length: a
silence shorter than min_silence_s is a gap between words or a stop closure (speech), a burst
shorter than min_speech_s inside silence is a click or breath (not speech).
"""

from __future__ import annotations

import math

import numpy as np

# Percentiles of the frame levels. The floor is the pauses' level if they fill at least ~5 % of
# the frames (with fewer it is a quiet speech frame: the threshold rises, but the pauses stay
# below it). The speech level needs speech in at least ~2 % of the frames; a clip of steady
# noise with less speech than that reads as one level throughout (all speech, MIN_RANGE_DB).
FLOOR_PERCENTILE = 5.0
SPEECH_PERCENTILE = 98.0
# Levels more than this far below the speech level are all "silence" to the threshold: keeps
# digital zero (-inf) and dither-level hiss from dragging the floor to a depth that would depend
# on the clip's absolute level.
DYNAMIC_RANGE_DB = 60.0
# A clip whose speech level is less than this above its floor has no pauses to find (one level
# throughout: continuous speech, or one steady sound): every frame counts as speech.
MIN_RANGE_DB = 10.0


def frame_levels(audio, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """float64 [num_frames] RMS level in dBFS (20 log10 RMS; a full-scale sine is -3 dB) of each
    video frame's audio.

    audio: mono float [N] in [-1, 1] at `sample_rate` Hz; fps: video frames per second.
    Frame k covers the round(sample_rate / fps) samples centred on sample round(k sample_rate /
    fps), the span `audio_window` gives for centre k / fps, clipped to the audio: frame 0 is
    measured on its second half only (not diluted by padding zeros). Frames with no samples
    (past the end of the audio) or only zeros read -inf. A DC offset is not removed: it reads
    as a floor under the speech like any steady noise, which the relative threshold allows for.
    """
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [N] samples, got shape {audio.shape}")
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps}, {sample_rate}")
    num_frames = int(num_frames)
    span = max(int(round(sample_rate / fps)), 1)
    starts = np.rint(np.arange(num_frames) * (sample_rate / fps)).astype(np.int64) - span // 2
    lo = np.clip(starts, 0, audio.size)
    hi = np.clip(starts + span, 0, audio.size)
    # Sums of squares by a running total: O(N + T) for any frame rate.
    energy = np.concatenate([[0.0], np.cumsum(audio * audio)])
    counts = hi - lo
    mean_square = np.where(counts > 0, (energy[hi] - energy[lo]) / np.maximum(counts, 1), 0.0)
    # Rounding in the running total can leave a tiny positive or negative remainder where the
    # audio is all zeros; a frame whose own samples are all zero is exactly silent.
    mean_square = np.maximum(mean_square, 0.0)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(mean_square)


def activity_threshold(levels: np.ndarray, *, threshold_fraction: float = 0.3,
                       min_margin_db: float = 6.0) -> tuple[float, float, float]:
    """(floor_db, speech_db, threshold_db) for frame levels [T] in dB (`frame_levels`).

    speech_db: the SPEECH_PERCENTILE-th percentile of the levels. floor_db: the
    FLOOR_PERCENTILE-th percentile, after raising every level to at least speech_db -
    DYNAMIC_RANGE_DB. threshold_db = floor_db + max(min_margin_db, threshold_fraction *
    (speech_db - floor_db)): a fraction of the clip's own range, but never within min_margin_db
    of the floor, where a noise floor's own fluctuations would cross it. Frames above the
    threshold are speech. Two cases have no threshold between speech and floor:
      - speech_db - floor_db < MIN_RANGE_DB: threshold_db = -inf (every frame is speech);
      - speech_db == -inf (all digital silence): threshold_db = +inf (no frame is speech).
    """
    levels = np.asarray(levels, np.float64)
    sounding = levels[np.isfinite(levels)]
    if sounding.size == 0:
        return -math.inf, -math.inf, math.inf
    if sounding.size < (1.0 - SPEECH_PERCENTILE / 100.0) * levels.size:
        # Digital zero almost throughout: the percentile would land in it; take the frames
        # that have any sound.
        speech_db = float(np.percentile(sounding, SPEECH_PERCENTILE))
    else:
        # -inf would turn the percentile's interpolation into nan; any level below the lowest
        # sound ranks the same.
        ranked = np.where(np.isfinite(levels), levels, sounding.min() - 1.0)
        speech_db = float(np.percentile(ranked, SPEECH_PERCENTILE))
    floor_db = float(np.percentile(np.maximum(levels, speech_db - DYNAMIC_RANGE_DB),
                                   FLOOR_PERCENTILE))
    span = speech_db - floor_db
    if span < MIN_RANGE_DB:
        return floor_db, speech_db, -math.inf
    return floor_db, speech_db, floor_db + max(min_margin_db, threshold_fraction * span)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, values) of the runs of equal values of a bool [T] array; ends exclusive."""
    change = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [mask.size]])
    return starts, ends, mask[starts]


def _fill_short_runs(mask: np.ndarray, value: bool, min_frames: float) -> np.ndarray:
    """Copy of `mask` with the runs of `value` shorter than min_frames flipped to `not value`."""
    out = mask.copy()
    if mask.size == 0:
        return out
    for start, end, run_value in zip(*_runs(mask)):
        if run_value == value and end - start < min_frames:
            out[start:end] = not value
    return out


def voice_activity(audio, sample_rate: int, fps: float, num_frames: int, *,
                   min_silence_s: float = 0.4, min_speech_s: float = 0.1,
                   threshold_fraction: float = 0.3, min_margin_db: float = 6.0,
                   threshold_db: float | None = None) -> np.ndarray:
    """bool [num_frames], True where frame k (centred on t = k / fps) is speech.

    audio: mono float [N] in [-1, 1] at `sample_rate` Hz, the whole driving clip (thresholds
    come from its own levels, so a short excerpt may decide differently). threshold_db: a
    threshold measured once on other audio of the same recording (a live stream's
    calibration; None: this clip's own, `activity_threshold`).

    1. Frame levels (`frame_levels`) above the clip's threshold (`activity_threshold`,
       threshold_fraction and min_margin_db passed on) are speech.
    2. Silences shorter than min_silence_s seconds become speech: gaps between words and stop
       closures are part of talking, not pauses to rest the mouth in.
    3. Then sounds shorter than min_speech_s seconds alone in silence become silence: a click,
       breath or lip smack.
    Step 2 goes first so that short syllables split by closures are joined before step 3 could
    drop them. Run lengths are read as the audio durations they stand for: a frame's span is
    1/fps wide and the frames at a run's two edges straddle the boundary, so n silent frames
    are a silence of about (n + 1) / fps seconds, and n speech frames a sound of about
    (n - 1) / fps (a 60 ms click lights up to 3 frames at 25 fps). Runs at the start and end
    of the clip are judged like any other: a clip that starts 0.2 s before the first word
    starts with speech frames.
    """
    levels = frame_levels(audio, sample_rate, fps, num_frames)
    if threshold_db is None:
        _, _, threshold_db = activity_threshold(levels, threshold_fraction=threshold_fraction,
                                                min_margin_db=min_margin_db)
    active = levels > threshold_db
    active = _fill_short_runs(active, False, min_silence_s * fps - 1.0)
    return _fill_short_runs(active, True, min_speech_s * fps + 1.0)


def silence_weight(active, fps: float, ramp_s: float = 0.12) -> np.ndarray:
    """float64 [T] in [0, 1]: how far each frame is into a silence, for blending the talking
    mouth (weight 0) towards a resting one (weight 1).

    active: bool [T] speech frames (`voice_activity`); fps: frames per second; ramp_s: seconds.
    Speech frames are 0. A silent frame's weight is a raised cosine of its time from the nearest
    speech: 0.5 - 0.5 cos(pi min(d / ramp_s, 1)), d = (frames to the nearest speech frame - 0.5)
    / fps, i.e. measured from the boundary half a frame before it. So the ramps lie inside the
    silences, reach 1 after ramp_s, and change by at most about pi / (2 ramp_s fps) per frame
    (no pops). A silence shorter than two ramps rises and falls without reaching 1; one that
    runs to either end of the clip stays at 1 up to that end.
    """
    active = np.asarray(active, bool)
    if active.ndim != 1:
        raise ValueError(f"active must be [T] booleans, got shape {active.shape}")
    if ramp_s <= 0 or fps <= 0:
        raise ValueError(f"ramp_s and fps must be positive, got {ramp_s}, {fps}")
    t = active.size
    index = np.arange(t)
    # Index of the nearest speech frame at or before / at or after each frame (+-inf: none).
    before = np.maximum.accumulate(np.where(active, index, -np.inf)) if t else np.zeros(0)
    after = np.minimum.accumulate(np.where(active, index, np.inf)[::-1])[::-1] if t else before
    frames_away = np.minimum(index - before, after - index)
    seconds = np.maximum(frames_away - 0.5, 0.0) / fps
    weight = 0.5 - 0.5 * np.cos(np.pi * np.minimum(seconds / ramp_s, 1.0))
    return np.where(active, 0.0, weight)
