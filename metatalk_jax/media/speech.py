"""Text to speech with espeak-ng, with the time of every phoneme: the viseme teacher's voice.

    speech = synthesize("Bob made a map.", voice="en-us", rate_wpm=160)
    speech.audio        float32 [N] in [-1, 1] at speech.sample_rate Hz (default 16 kHz)
    speech.phonemes     [(start_s, end_s, symbol), ...] in espeak's ASCII phoneme names
                        (Kirshenbaum-like: "p", "@", "aI", "_" for a pause), stress marks removed

The library is called through ctypes in synchronous mode: espeak-ng hands each block of 16-bit
samples at its native rate (22050 Hz) to a callback together with its events; phoneme events
(enabled by espeakINITIALIZE_PHONEME_EVENTS) give each phoneme's start as `audio_position` in
milliseconds. A phoneme ends where the next one starts; the last ends with the audio. The
audio is resampled to `sample_rate` with a polyphase filter (scipy.signal.resample_poly).

Where the library comes from, in order: the `espeakng-loader` wheel (it bundles libespeak-ng
and espeak-ng-data; pip install espeakng-loader), then a system libespeak-ng.so.1 with its own
data (Debian/Ubuntu: apt-get install libespeak-ng1). Neither: `SpeechUnavailable` (a
ValueError) with one line saying what to install. The engine is initialised once per process
and reused; calls must not overlap (espeak-ng keeps global state), which is why they are
serialised by a lock. The library's noise generator is reseeded before every call (where the
library has espeak_ng_SetRandSeed), but some synthesis state (e.g. its pitch flutter) runs on
from call to call: the same text gives the same phonemes and, within a millisecond or two, the
same timings, not bit-identical samples (a fresh process repeats its sequence of calls exactly).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import math
import os
import threading

import numpy as np

from metatalk_jax.errors import InputError

# espeak_AUDIO_OUTPUT, espeak_EVENT_TYPE, espeak_PARAMETER and flag values of speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_EE_OK = 0

RATE_LIMITS_WPM = (80, 450)          # espeakRATE_MINIMUM / MAXIMUM
_STRESS_MARKS = "'\",%=!"            # prefixes of stressed / unstressed phoneme names

INSTALL_HINT = ("pip install espeakng-loader (bundles libespeak-ng and its data), or "
                "apt-get install libespeak-ng1")


class SpeechUnavailable(InputError):
    """No espeak-ng library could be loaded (the message says what to install)."""


@dataclasses.dataclass(frozen=True)
class Speech:
    """Synthesised speech.

    audio: float32 [N] in [-1, 1] at `sample_rate` Hz, mono.
    phonemes: [(start_s, end_s, symbol)] in time order, seconds from the start of `audio`;
      pauses are symbols starting with "_".
    """

    audio: np.ndarray
    phonemes: list
    sample_rate: int
    text: str = ""
    voice: str = ""

    @property
    def duration_s(self) -> float:
        return len(self.audio) / float(self.sample_rate)


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h, API revision 12)."""

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


def _library_candidates() -> list[tuple[str, str | None]]:
    """[(shared library path, espeak-ng-data parent dir or None for the library's default)]."""
    found = []
    try:
        import espeakng_loader
    except ImportError:
        espeakng_loader = None
    if espeakng_loader is not None:
        try:
            data = espeakng_loader.get_data_path()
            found.append((espeakng_loader.get_library_path(), os.path.dirname(data)))
        except (RuntimeError, OSError):
            pass
    system = ctypes.util.find_library("espeak-ng")
    for name in ([system] if system else []) + ["libespeak-ng.so.1"]:
        found.append((name, None))
    return found


class _Engine:
    """The process's one initialised espeak-ng and the buffers its callback fills."""

    def __init__(self):
        errors = []
        for path, data_parent in _library_candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError as err:
                errors.append(f"{path}: {err}")
                continue
            self._bind(lib)
            options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                         data_parent.encode() if data_parent else None, options)
            if rate <= 0:
                errors.append(f"{path}: espeak_Initialize failed (no espeak-ng-data?)")
                continue
            self.lib, self.native_rate, self.library_path = lib, int(rate), path
            break
        else:
            detail = f" (tried {'; '.join(errors)})" if errors else ""
            raise SpeechUnavailable(f"no espeak-ng library found: {INSTALL_HINT}{detail}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._on_synth)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    @staticmethod
    def _bind(lib) -> None:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        if hasattr(lib, "espeak_ng_SetRandSeed"):      # espeak-ng >= 1.51
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None

    def _on_synth(self, samples, count, events) -> int:
        if count > 0 and samples:
            self._chunks.append(np.ctypeslib.as_array(samples, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                name = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append((int(event.audio_position), name))
            i += 1
        return 0   # 0 = go on synthesising

    def speak(self, text: str, voice: str, rate_wpm: int, pitch: int):
        """(int16 samples at the native rate, [(ms, phoneme name)]) for `text`."""
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != _EE_OK:
            raise InputError(f"espeak-ng has no voice {voice!r} (e.g. en-us, en, en-gb-x-rp, "
                             "en-us+f3)")
        for parameter, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch),
                                 (_PARAM_RANGE, 50), (_PARAM_VOLUME, 100)):
            lib.espeak_SetParameter(parameter, int(value), 0)
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            # The noise of bursts and fricatives (and so the exact length) is random otherwise.
            lib.espeak_ng_SetRandSeed(0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                  _CHARS_UTF8 | _ENDPAUSE, None, None)
        lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for {text[:40]!r}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


def espeak_available() -> bool:
    """True when an espeak-ng library loads (initialising it)."""
    try:
        _engine()
    except SpeechUnavailable:
        return False
    return True


def plain_phoneme(name: str) -> str:
    """espeak's event name without its stress marks: "'oU" -> "oU", ",eI" -> "eI"."""
    return name.lstrip(_STRESS_MARKS) or name


def phoneme_spans(events, duration_s: float) -> list[tuple[float, float, str]]:
    """[(ms, name)] phoneme starts -> [(start_s, end_s, plain name)]: each phoneme lasts until
    the next one starts, the last until `duration_s`; zero-length ones are dropped."""
    starts = [(ms / 1000.0, plain_phoneme(name)) for ms, name in sorted(events, key=lambda e: e[0])]
    spans = []
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else max(duration_s, start)
        end = min(end, max(duration_s, start))
        if end > start:
            spans.append((start, end, name))
    return spans


def synthesize(text: str, *, voice: str = "en-us", rate_wpm: int = 160, pitch: int = 50,
               sample_rate: int = 16000) -> Speech:
    """Speaks `text` with espeak-ng (module docstring).

    voice: an espeak-ng voice name, optionally with a variant ("en-us", "en", "en-gb-x-rp",
      "en-us+f3", "en+m3"); rate_wpm: words per minute in [80, 450]; pitch: base pitch 0-100
      (50 = the voice's normal); sample_rate: Hz of the returned audio.
    Returns a Speech (float32 audio [N], phoneme spans in seconds). A bad text, voice, rate or
    pitch raises InputError; no espeak-ng library: SpeechUnavailable.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("synthesize: text is empty")
    if not RATE_LIMITS_WPM[0] <= int(rate_wpm) <= RATE_LIMITS_WPM[1]:
        raise InputError(f"synthesize: rate_wpm must be in {list(RATE_LIMITS_WPM)}, "
                         f"got {rate_wpm}")
    if not 0 <= int(pitch) <= 100:
        raise InputError(f"synthesize: pitch must be in [0, 100], got {pitch}")
    if int(sample_rate) <= 0:
        raise ValueError(f"synthesize: sample_rate must be positive, got {sample_rate}")
    engine = _engine()
    with engine.lock:
        native, events = engine.speak(text, voice, int(rate_wpm), int(pitch))
    audio = native.astype(np.float32) / 32768.0
    if int(sample_rate) != engine.native_rate and audio.size:
        from scipy.signal import resample_poly
        common = math.gcd(int(sample_rate), engine.native_rate)
        audio = resample_poly(audio, int(sample_rate) // common, engine.native_rate // common)
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    duration = len(audio) / float(sample_rate)
    return Speech(audio=audio, phonemes=phoneme_spans(events, duration),
                  sample_rate=int(sample_rate), text=text, voice=voice)


def with_pauses(parts: list[Speech], pause_s: float) -> Speech:
    """The parts one after the other with `pause_s` seconds of silence between them (phoneme
    times shifted, a "_" pause span for each gap): speech with the pauses a reader makes."""
    if not parts:
        raise InputError("with_pauses: no speech")
    rate = parts[0].sample_rate
    if any(p.sample_rate != rate for p in parts):
        raise ValueError("with_pauses: the parts have different sample rates")
    gap = np.zeros(int(round(pause_s * rate)), np.float32)
    audio, phonemes, offset = [], [], 0.0
    for i, part in enumerate(parts):
        if i:
            audio.append(gap)
            phonemes.append((offset, offset + len(gap) / rate, "_:"))
            offset += len(gap) / rate
        audio.append(part.audio)
        phonemes.extend((a + offset, b + offset, s) for a, b, s in part.phonemes)
        offset += part.duration_s
    return Speech(audio=np.concatenate(audio), phonemes=phonemes, sample_rate=rate,
                  text=" ".join(p.text for p in parts), voice=parts[0].voice)


def sentences_of(text: str) -> list[str]:
    """The sentences of `text`, split after . ! or ? (the punctuation kept)."""
    import re
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]
