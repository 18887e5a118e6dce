"""A trained talker kept loaded: one subject, its A2E and renderer, compiled once.

    from metatalk_jax.inference.talker import Talker
    talker = Talker.load(subject="subjects/me", a2e="runs/me_a2e", renderer="runs/me_hd")
    talker = Talker.load("me.talker")                    # the same, from an exported bundle
    talker.say("speech.wav", out="a.mp4")                # an audio file ...
    talker.say("Hello there. How are you?", out="b.mp4") # ... or text (espeak-ng speaks it)
    for frame in talker.frames(samples_16k):             # RGB uint8 [H, W, 3] frames, in order
        ...
    for frame in talker.stream(chunks_16k):              # live: frames as the audio arrives
        ...

`say` is what `python -m metatalk_jax.infer` runs (one job) and what `infer --jobs` runs per job;
everything that compiles (the A2E, the 3DMM renders of the subject's crops, the renderer) is
built at the first call and reused, so later calls of the same talker compile nothing
(`compiles()` counts JAX's compile events since load). Audio is 16 kHz mono for the A2E; the
output's audio track is the same speech at 48 kHz (the file's own samples for a file).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np

from metatalk_jax.errors import InputError
from metatalk_jax.inference import pipeline
from metatalk_jax.inference.audio_drive import expressions_from_audio
from metatalk_jax.inference.silence import silent_drive
from metatalk_jax.inference.trained_models import load_a2e
from metatalk_jax.media.audio_features import frames_for_audio
from metatalk_jax.media.audio_files import check_speech_audio, load_audio
from metatalk_jax.subject.face_model import subject_face_model
from metatalk_jax.train.trained_on import check_trained_on

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".opus", ".mp4", ".mov",
                    ".mkv", ".webm")


VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv")


def check_output(path: str) -> str:
    """`path` if a video can be written there, else an InputError (one line): not an .mp4
    (.mov/.mkv), a directory, a folder that cannot be written (or made: missing folders are
    created when the video is written), a bucket URL (infer writes local files)."""
    text = os.fspath(path)
    if "://" in text:
        raise InputError(f"{text}: infer writes local files; write here and copy it (gsutil cp)")
    if not text.lower().endswith(VIDEO_EXTENSIONS):
        raise InputError(f"{text}: the output must be an .mp4 (or .mov/.mkv) file")
    if os.path.isdir(text):
        raise InputError(f"{text}: is a directory; --out names the video file to write")
    folder = os.path.dirname(os.path.abspath(text))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{text}: the folder {existing} cannot be written")
    if os.path.exists(text) and not os.access(text, os.W_OK):
        raise InputError(f"{text}: exists and cannot be replaced")
    return text


class CompileCounter:
    """Counts JAX's compile events (tracing, lowering, backend compile) in this process."""

    _count = 0
    _listening = False

    @classmethod
    def start(cls) -> None:
        if not cls._listening:
            from jax import monitoring

            def listen(event, *args, **kwargs):
                if event.startswith("/jax/core/compile/"):
                    cls._count += 1
            monitoring.register_event_duration_secs_listener(listen)
            cls._listening = True

    @classmethod
    def count(cls) -> int:
        return cls._count


@dataclasses.dataclass
class Speech:
    """Driving speech: samples float32 [N] at 16 kHz; mux: the samples for the output's audio
    track at pipeline.MUX_SAMPLE_RATE; name: where it came from (for messages); phonemes:
    [(start_s, end_s, symbol)] when known (text spoken by espeak-ng), else None."""

    samples: np.ndarray
    mux: np.ndarray
    name: str
    phonemes: list | None = None


def _resampled(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly
    g = gcd(int(rate), int(to))
    return resample_poly(np.asarray(samples, np.float64), to // g, rate // g).astype(np.float32)


def speech_of(audio_or_text, settings: pipeline.InferenceSettings) -> Speech:
    """Speech from a file path, samples (float [N] at 16 kHz), text (espeak-ng) or an espeak
    media.speech.Speech: checked (silent, too short or too long audio is an InputError naming
    it)."""
    from metatalk_jax.media import speech as espeak
    rate = pipeline.FEATURE_SAMPLE_RATE
    phonemes = None
    if isinstance(audio_or_text, espeak.Speech):
        samples = audio_or_text.audio
        if audio_or_text.sample_rate != rate:
            samples = _resampled(samples, audio_or_text.sample_rate, rate)
        name, phonemes = f"the text {audio_or_text.text[:40]!r}", audio_or_text.phonemes
    elif isinstance(audio_or_text, np.ndarray):
        samples = np.asarray(audio_or_text, np.float32).reshape(-1)
        name = "the audio samples"
    elif isinstance(audio_or_text, (str, os.PathLike)) and (
            os.path.isfile(audio_or_text) or str(audio_or_text).lower().endswith(
                AUDIO_EXTENSIONS)):
        path = os.fspath(audio_or_text)
        samples = pipeline.load_driving_audio(path, settings)
        return Speech(samples, load_audio(path, pipeline.MUX_SAMPLE_RATE), path)
    elif isinstance(audio_or_text, str) and audio_or_text.strip():
        spoken = espeak.synthesize(audio_or_text, sample_rate=rate)
        samples, name = spoken.audio, f"the text {audio_or_text[:40]!r}"
        phonemes = spoken.phonemes
    else:
        raise InputError(f"{audio_or_text!r}: neither an audio file, audio samples nor text")
    check_speech_audio(samples, rate, name, min_seconds=settings.min_seconds,
                       silence_dbfs=settings.silence_dbfs)
    seconds = len(samples) / rate
    if seconds > settings.max_seconds:
        raise InputError(f"{name}: {seconds:.1f} s long; at most {settings.max_seconds:.0f} s is "
                         "allowed (--max-seconds)")
    return Speech(samples, _resampled(samples, rate, pipeline.MUX_SAMPLE_RATE), name, phonemes)


class Talker:
    """A subject with its trained A2E and renderer, loaded and checked once (module docstring).

    Build with Talker.load; `say` writes a video, `frames` yields the frames of one without
    writing. settings: pipeline.InferenceSettings, the defaults of every call (a call's keyword
    arguments override them for that call).
    """

    def __init__(self, subject, a2e, renderer, video: str, settings, trained_on: list[str]):
        self.subject, self.a2e, self.renderer, self.video = subject, a2e, renderer, video
        self.settings, self.trained_on = settings, trained_on
        self._faces = None
        self._compiles_at_load = CompileCounter.count()

    @classmethod
    def load(cls, talker: str | None = None, *, subject: str | None = None,
             a2e: str | None = None, renderer: str | None = None,
             settings: pipeline.InferenceSettings | None = None,
             first_audio: str | None = None) -> "Talker":
        """Loads and cross-checks a talker bundle (inference/talker_bundle.py; local or a
        bucket URL) or the subject directory and the A2E / renderer checkpoints (work dirs or
        step dirs). Raises InputError (one line) on a mismatch or a damaged bundle.
        first_audio: an audio file checked once the subject and renderer are (before the A2E
        loads), so a one-off run with bad audio fails in seconds."""
        CompileCounter.start()
        settings = settings or pipeline.InferenceSettings()
        if (talker is None) == (subject is None or a2e is None or renderer is None):
            raise InputError("pass a talker bundle, or --subject, --a2e and --renderer")
        if talker is not None:
            from metatalk_jax.inference.talker_bundle import open_bundle
            bundle = open_bundle(talker)
            subject, a2e, renderer = bundle.subject, bundle.a2e, bundle.renderer
            settings = dataclasses.replace(settings, video=bundle.video,
                                           model_path=bundle.face_model)
        subject_, renderer_, video = pipeline.prepare_inference(subject, renderer, settings)
        if first_audio is not None:
            pipeline.load_driving_audio(first_audio, settings)
        a2e_ = load_a2e(a2e)
        trained_on = [check_trained_on(subject_, m.checkpoint.step_dir, what,
                                       allow_other=settings.allow_other_subject)
                      for m, what in ((a2e_, "A2E"), (renderer_, "renderer"))]
        for note in trained_on:
            if "another subject" in note:
                print(f"warning: {note}", file=sys.stderr, flush=True)
        e = int(np.shape(subject_.coefficients["expression"])[1])
        if a2e_.expression_dim != e:
            raise InputError(f"{a2e}: the A2E predicts {a2e_.expression_dim} expression "
                             f"coefficients, the subject {subject} has {e}")
        return cls(subject_, a2e_, renderer_, video, settings, trained_on)

    def compiles(self) -> int:
        """JAX compile events in this process since the talker was loaded."""
        return CompileCounter.count() - self._compiles_at_load

    def settings_for(self, overrides: dict) -> pipeline.InferenceSettings:
        """The talker's settings with one call's overrides."""
        return dataclasses.replace(self.settings, **overrides) if overrides else self.settings

    def faces(self) -> pipeline.FaceRenders:
        """The subject's 3DMM renders in its crops (built, and compiled, once)."""
        if self._faces is None:
            r = self.renderer
            self._faces = pipeline.FaceRenders(self.subject, r.resolution,
                                               self.settings.model_path, r.conditioning,
                                               r.mouth_reference)
        return self._faces

    def drive(self, speech: Speech, settings) -> tuple[np.ndarray, np.ndarray]:
        """(expressions [N, E] of the output frames, voiced [N] bool) for `speech`."""
        subject = self.subject
        fps = float(subject.meta["fps"])
        rate = pipeline.FEATURE_SAMPLE_RATE
        n = frames_for_audio(len(speech.samples), rate, fps)
        expressions = expressions_from_audio(
            self.a2e, speech.samples, n, fps=fps,
            audio_samples=int(subject.meta["audio_samples"]), sample_rate=rate,
            show_progress=settings.show_progress)
        settled, voiced = silent_drive(expressions, speech.samples, rate, fps,
                                       subject_face_model(subject, settings.model_path),
                                       subject.coefficients["expression"])
        return (settled if settings.rest_in_pauses else expressions), voiced

    def say(self, audio_or_text, out: str, *, phonemes=None, **settings) -> dict:
        """Writes the talker saying `audio_or_text` (a file, 16 kHz samples, text or an espeak
        Speech) to `out` (mp4; + its drive sidecar, + the preview when asked); returns infer's
        summary dict. phonemes: [(start_s, end_s, espeak symbol)] of the speech when known
        (text gives its own), for the bilabial closures of the summary."""
        t0 = time.perf_counter()
        check_output(out)
        options = self.settings_for(settings)
        speech = speech_of(audio_or_text, options)
        expressions, voiced = self.drive(speech, options)
        summary = pipeline.render_video(self.subject, self.renderer, self.video, expressions,
                                        out, options, audio=speech.mux, started=t0,
                                        voiced=voiced, faces=self.faces(),
                                        phonemes=phonemes or speech.phonemes)
        summary["a2e_step"] = self.a2e.checkpoint.step
        summary["trained_on"] = self.trained_on
        summary["compiles_since_load"] = self.compiles()
        return summary

    def stream(self, chunks, **options):
        """Yields output frames as 16 kHz audio chunks arrive (inference/live_stream.py: the
        look-ahead, the calibration); the frames equal `frames` of the whole audio when given
        its calibration (live_stream.DriveCalibration.of)."""
        from metatalk_jax.inference.live_stream import stream
        return stream(self, chunks, **options)

    def frames(self, audio_or_text, **settings):
        """Yields the output frames (RGB uint8 [H, W, 3]) of the talker saying `audio_or_text`,
        in order, without writing anything."""
        options = self.settings_for(settings)
        expressions, _ = self.drive(speech_of(audio_or_text, options), options)
        for frame, _ in pipeline.stream_frames(self.subject, self.renderer, self.video,
                                               expressions, options, faces=self.faces()):
            yield frame
