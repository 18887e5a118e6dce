"""A talker driven live: audio in as it arrives, frames out as soon as they are decided.

    for frame in talker.stream(chunks):          # chunks: float32 16 kHz arrays, any sizes
        show(frame)                              # RGB uint8 [H, W, 3], 25 fps, in order

Every output frame is the offline path's frame (`Talker.frames` of the whole audio), given the
same calibration: two numbers the offline path measures on the whole clip -- the front end's
loudness gain and the speech threshold of the pause detector (`DriveCalibration`). Live, they
are measured on the first `calibrate_s` seconds (default 2 s) and then held (or passed in,
measured on earlier speech of the same voice and microphone); give `stream` the offline
clip's calibration and its frames equal the offline ones exactly (tests/test_infer.py).

How far behind the audio a frame is decided (the look-ahead, at 25 fps, the default A2E of
15 frames, 0.64 s audio windows and the renderer's 7-frame window):
  A2E        its window's last frame (+7 frames) and that frame's audio window (+0.32 s);
             expressions are computed in the offline path's batches of `a2e_batch` frames;
  pauses     a pause is one when it lasts 0.4 s, and the mouth ramps over 0.12 s: frames are
             settled LOOKAHEAD_PAUSE_S (0.8 s) behind the newest audio;
  renderer   +3 frames, renders and frames in batches of the pipeline's batch size.
So a frame leaves about 1.1 s after its audio at best, plus the batching (up to a2e_batch and
batch frames) and the compute; BENCHMARKS.md has the measured latency and real-time factor.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Iterator

import numpy as np

from metatalk_jax.inference import pipeline
from metatalk_jax.inference.audio_drive import batch_expressions
from metatalk_jax.inference.silence import rest_expression, settle_in_silence
from metatalk_jax.media.audio_features import frames_for_audio
from metatalk_jax.media.loudness import apply_gain, normalise_loudness
from metatalk_jax.media.voice_activity import (activity_threshold, frame_levels, silence_weight,
                                               voice_activity)
from metatalk_jax.subject.face_model import subject_face_model

LOOKAHEAD_PAUSE_S = 0.8      # >= min silence 0.4 s + min speech 0.1 s + ramp 0.12 s, rounded up


@dataclasses.dataclass(frozen=True)
class DriveCalibration:
    """gain_db: the front end's loudness gain (media/loudness.py); threshold_db: the pause
    detector's speech threshold on raw frame levels (media/voice_activity.py)."""

    gain_db: float
    threshold_db: float

    @classmethod
    def of(cls, audio: np.ndarray, sample_rate: int, fps: float) -> "DriveCalibration":
        """What the offline path measures on `audio` (float [N] at sample_rate Hz)."""
        n = frames_for_audio(len(audio), sample_rate, fps)
        _, gain_db = normalise_loudness(audio, sample_rate)
        _, _, threshold = activity_threshold(frame_levels(audio, sample_rate, fps, n))
        return cls(float(gain_db), float(threshold))


def a2e_lookahead_frames(a2e_window: int, audio_samples: int, fps: float,
                         sample_rate: int) -> int:
    """Frames between the newest audio and the last frame whose A2E inputs are all final: its
    window's last frame and that frame's audio window (plus one for rounding)."""
    return a2e_window // 2 + math.ceil(audio_samples / 2 / sample_rate * fps) + 1


def lookahead_frames(a2e_window: int, audio_samples: int, renderer_window: int, fps: float,
                     sample_rate: int) -> int:
    """Output frames between the newest audio and the last frame that can be decided."""
    a2e = a2e_lookahead_frames(a2e_window, audio_samples, fps, sample_rate)
    return max(a2e, math.ceil(LOOKAHEAD_PAUSE_S * fps)) + renderer_window // 2


def stream(talker, chunks: Iterable[np.ndarray], *, calibration: DriveCalibration | None = None,
           calibrate_s: float = 2.0, a2e_batch: int = 32, **settings) -> Iterator[np.ndarray]:
    """Yields the talker's output frames (RGB uint8 [H, W, 3]) as the 16 kHz audio `chunks`
    arrive (module docstring); the stream ends when the chunks do."""
    options = talker.settings_for(settings)
    subject = talker.subject
    fps = float(subject.meta["fps"])
    rate = pipeline.FEATURE_SAMPLE_RATE
    audio_samples = int(subject.meta["audio_samples"])
    a2e = talker.a2e
    model = subject_face_model(subject, options.model_path)
    batch, large = pipeline._batch_size(talker.renderer, subject, options)
    background = pipeline.BackgroundFrames(talker.video, fps, subject.num_frames,
                                           block=max(8, batch),
                                           decoder_threads=1 if large else None)
    frames = pipeline._FrameStream(talker.renderer, talker.faces(), None, batch, None,
                                   background=background.endless())
    pause_frames = math.ceil(LOOKAHEAD_PAUSE_S * fps)
    rest = rest_expression(model, subject.coefficients["expression"])
    received: list[np.ndarray] = []
    a2e_out = np.zeros((0, a2e.expression_dim), np.float32)     # A2E expressions, final
    pushed = 0                                                  # expressions given to frames

    def advance(final: bool):
        nonlocal a2e_out, pushed, calibration
        audio = np.concatenate(received) if received else np.zeros(0, np.float32)
        if calibration is None:
            if not final and len(audio) < calibrate_s * rate:
                return
            calibration = DriveCalibration.of(audio, rate, fps)
        known = frames_for_audio(len(audio), rate, fps)
        scaled = apply_gain(audio, calibration.gain_db)
        # A2E batches whose every input is final: all neighbours exist and their audio
        # windows are complete (the offline path's batches, so the same numbers).
        limit = known if final else known - a2e_lookahead_frames(a2e.window, audio_samples,
                                                                 fps, rate)
        while len(a2e_out) < known:
            start = len(a2e_out)
            stop = min(start + a2e_batch, known)
            if not final and stop > limit:
                break
            centres = np.arange(start, stop, dtype=np.int64)
            position = np.concatenate([centres, np.repeat(centres[-1:], a2e_batch - len(centres))])
            a2e_out = np.concatenate([a2e_out, batch_expressions(
                a2e, scaled, centres, position, known, fps=fps, audio_samples=audio_samples,
                sample_rate=rate)])
        # Pauses over every frame with audio; a frame's weight is final LOOKAHEAD_PAUSE_S
        # behind the newest audio (and everywhere once the audio has ended).
        decided = known if final else min(len(a2e_out), known - pause_frames)
        if decided <= pushed and not final:
            return
        drive = a2e_out[pushed:decided]
        if options.rest_in_pauses:
            voiced = voice_activity(audio, rate, fps, known,
                                    threshold_db=calibration.threshold_db)
            drive = settle_in_silence(drive, silence_weight(voiced, fps)[pushed:decided], rest)
        frames.extend(drive, final=final)
        pushed = max(decided, pushed)

    for chunk in chunks:
        received.append(np.asarray(chunk, np.float32).reshape(-1))
        advance(final=False)
        for frame, _ in frames.ready():
            yield frame
    advance(final=True)
    for frame, _ in frames.ready():
        yield frame
