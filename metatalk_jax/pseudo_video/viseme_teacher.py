"""The viseme teacher: a pseudo-video corpus from synthetic speech, with no Wav2Lip and no audio
corpus (`python -m metatalk_jax.pseudo --teacher visemes`, and the built-in demo).

For each sentence (a built-in list, or a text file with one sentence per line):
  espeak-ng speaks it (media/speech.py) with a voice, rate, pitch and gain drawn per clip from
  config.visemes -> the phoneme timings become per-frame mouth controls with coarticulation
  (pseudo_video/visemes.py), their openings scaled to the subject's own range
  (`subject_opening_gain`, config.visemes.match_subject_opening) -> expressions = the subject's
  neutral expression (median of its fitted ones) + mouth-shape deltas solved in the subject's own
  expression basis -> a PseudoClip exactly as the Wav2Lip path builds it (pseudo_video/generate.py):
  frame k at t = k / fps, the 16 kHz audio window centred on t, source_frame = pingpong(k).
Clips are named "visemes/0007" (the sentence's index), written in parts of
config.clips_per_part whole clips with data_pipelines.pseudo_corpus.PseudoVideoWriter, so a rerun
skips the clips already in the corpus (change the sentences and use a new --out). A preview,
previews/visemes.png, shows the subject's 3DMM with every viseme class's mouth side by side.

It stands in for Wav2Lip pseudo videos where those cannot be made: the mouth follows phonetic
rules rather than a learned lip-sync model, and the voices are synthetic, so an A2E network
trained only on it learns timing and coarse mouth shapes, not a person's articulation.
"""

from __future__ import annotations

import functools
import os
import sys
import time

import numpy as np

from metatalk_jax.data_pipelines.pseudo_corpus import PseudoClip, PseudoVideoWriter
from metatalk_jax.errors import InputError
from metatalk_jax.media.audio_features import frames_for_audio
from metatalk_jax.media.frame_audio_windows import audio_window
from metatalk_jax.media.loudness import at_front_end_level
from metatalk_jax.media.video_read import pingpong_indices
from metatalk_jax.progress import Progress
from metatalk_jax.pseudo_video import visemes
from metatalk_jax.subject.mouth_shapes import MouthShapes, neutral_expression
from metatalk_jax.subject.face_model import subject_face_model
from metatalk_jax.subject.layout import Subject, load_subject

PREVIEWS = "previews"
PREVIEW_NAME = "visemes.png"
CLIP_PREFIX = "visemes/"

# Varied English sentences: every viseme class, questions and statements, short and long.
BUILTIN_SENTENCES = (
    "Bob made a map of the old harbour before breakfast.",
    "Please pass me the butter and the bread.",
    "Five very fine violins were found in the vault.",
    "Where were you when the whistle blew?",
    "She should choose the shoes that match her jacket.",
    "The thick fog drifted over the thatched cottages.",
    "Nine nice nurses knitted near the window.",
    "Good cooks can make a cake with very little sugar.",
    "Our father often walks along the calm river at dawn.",
    "Each evening the geese fly east over the fields.",
    "Why did you buy five white kites last night?",
    "How about a loud round of applause for the crowd?",
    "A boy found a shiny coin in the soil.",
    "Mister Moore bought four more oars for the boat.",
    "Judge Charles measured the beige garage twice.",
    "Lily likes yellow lemons and little limes.",
    "Ruth threw the ball through the open door.",
    "Go slowly over the snowy road home.",
    "My mother made plum jam in the summer.",
    "Think about the theme of the theatre play.",
    "Quickly, quietly, the queen questioned the guard.",
    "We will meet at eight by the big oak tree.",
    "The spaceship zoomed past the pale blue moon.",
    "Could you show me the way to the museum, please?",
    "Happy people help each other every day.",
    "The painter mixed purple paint with a bit of pink.",
    "Seven sailors sang songs on the silver sea.",
    "Vivid pictures of puppies hang above the piano.",
    "The weather in April is warm but windy.",
    "Awful autumn storms often knock over old trees.",
    "Pure water flows from the cool mountain spring.",
    "I am going to the market to buy fresh fish.",
    "Maybe we should wait a moment before we begin.",
    "Robots rarely remember what the researcher wrote.",
    "The baby giggled when the puppy licked her nose.",
    "Heavy rain fell all afternoon, and then the sun came out.",
    "Do you think the bus will be on time today?",
    "Sharp cheddar cheese tastes better with apples.",
    "Whoever wins the game buys the pizza.",
    "Ahoy! The ship is ready, so lift the anchor and sail away.",
)


CALIBRATION_SENTENCES = 8          # of BUILTIN_SENTENCES, for `subject_opening_gain`
OPENING_GAIN_LIMITS = (0.5, 4.0)


@functools.lru_cache(maxsize=4)
def _calibration_phonemes(fps: float) -> tuple:
    """((phoneme spans, frame count), ...) of the first CALIBRATION_SENTENCES built-in sentences
    spoken by espeak-ng's default voice at 150 words per minute."""
    from metatalk_jax.media.speech import synthesize
    out = []
    for text in BUILTIN_SENTENCES[:CALIBRATION_SENTENCES]:
        speech = synthesize(text, voice="en-us", rate_wpm=150)
        out.append((tuple(speech.phonemes), frames_for_audio(len(speech.audio),
                                                             speech.sample_rate, fps)))
    return tuple(out)


def read_sentences(path: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file (lines starting with # are comments)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: sentences file not found")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except UnicodeDecodeError as err:
        # Python's own message names the codec and byte but not the file.
        line = open(path, "rb").read()[:err.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} on line "
                         f"{line}); save it as UTF-8") from None
    sentences = [line for line in lines if line and not line.startswith("#")]
    if not sentences:
        raise InputError(f"{path}: no sentences (one per line)")
    return sentences


def _choices(values, what: str) -> tuple:
    values = (values,) if isinstance(values, (str, int, float)) else tuple(values)
    if not values:
        raise InputError(f"config.visemes.{what} is empty")
    return values


def clip_voice(index: int, settings) -> dict:
    """The voice of clip `index`: voice cycles through settings.voices; rate, pitch and gain are
    drawn from (settings.seed, index), so a resumed run gives a clip the same voice settings."""
    voices = _choices(settings.voices, "voices")
    rates = _choices(settings.rates_wpm, "rates_wpm")
    pitches = _choices(settings.pitches, "pitches")
    rng = np.random.default_rng([int(settings.seed), int(index)])
    low, high = (float(v) for v in settings.gain_db_range)
    return {"voice": str(voices[index % len(voices)]), "rate_wpm": int(rng.choice(rates)),
            "pitch": int(rng.choice(pitches)), "gain_db": float(rng.uniform(low, high))}


class VisemeTeacher:
    """Turns sentences into pseudo clips of one subject (module docstring)."""

    def __init__(self, subject: Subject, config):
        self.subject, self.config = subject, config
        self.settings = config.visemes
        meta = subject.meta
        self.fps = float(meta["fps"])
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.audio_samples = int(meta.get("audio_samples") or round(
            float(meta["config"]["audio_window_s"]) * self.sample_rate))
        self.model = subject_face_model(subject, config.model or None)
        fitted = np.asarray(subject.coefficients["expression"], np.float32)
        self.neutral = neutral_expression(fitted)
        s = self.settings
        self.shapes = MouthShapes(self.model, self.neutral,
                                          max_delta_norm=float(s.max_delta_norm))
        self.opening_gain = (self.subject_opening_gain(fitted)
                             if s.get("match_subject_opening", False) else 1.0)
        self.table = visemes.control_table(float(s.opening_scale) * self.opening_gain,
                                           float(s.width_scale), float(s.protrusion_scale))

    def subject_opening_gain(self, fitted: np.ndarray) -> float:
        """How much wider this person opens the mouth than the viseme table: the 95th
        percentile of the subject's fitted inner-lip gaps over that of the table's mouths on
        the calibration sentences (CALIBRATION_SENTENCES of the built-in list, the default
        voice), clipped to OPENING_GAIN_LIMITS. A person who talks with a wide jaw gets a teacher
        who does too; the A2E learns the range it will be asked to draw."""
        s = self.settings
        tracks = [visemes.control_tracks(phonemes, count, self.fps,
                                         table=visemes.control_table(),
                                         smoothing_s=float(s.smoothing_s),
                                         min_pause_s=float(s.min_pause_s))[:, 0]
                  for phonemes, count in _calibration_phonemes(self.fps)]
        teacher = float(np.percentile(np.concatenate(tracks), 95))
        person = float(np.percentile(self.shapes.measure(fitted)[:, 0], 95)) - float(
            s.closed_gap)
        low, high = OPENING_GAIN_LIMITS
        return float(np.clip(person / max(teacher, 1e-6), low, high))

    @property
    def expression_dim(self) -> int:
        return int(self.neutral.shape[0])

    def expressions(self, phonemes, count: int) -> np.ndarray:
        """float32 [count, E]: the teacher's expression of each frame for `phonemes`
        ([(start_s, end_s, symbol)], times from the audio's first sample)."""
        s = self.settings
        controls = visemes.control_tracks(phonemes, count, self.fps, table=self.table,
                                          smoothing_s=float(s.smoothing_s),
                                          min_pause_s=float(s.min_pause_s))
        return self.shapes.expressions(controls, float(s.closed_gap))

    def clip(self, index: int, sentence: str) -> PseudoClip:
        """The PseudoClip "visemes/<index>" of one sentence."""
        from metatalk_jax.media.speech import synthesize
        s = self.settings
        voice = clip_voice(index, s)
        speech = synthesize(sentence, voice=voice["voice"], rate_wpm=voice["rate_wpm"],
                            pitch=voice["pitch"], sample_rate=self.sample_rate)
        lead = int(round(float(s.lead_silence_s) * self.sample_rate))
        audio = np.concatenate([np.zeros(lead, np.float32), speech.audio])
        audio = np.clip(audio * 10.0 ** (voice["gain_db"] / 20.0), -1.0, 1.0)
        shift = lead / self.sample_rate
        phonemes = [(a + shift, b + shift, p) for a, b, p in speech.phonemes]
        count = frames_for_audio(len(audio), self.sample_rate, self.fps)
        expression = self.expressions(phonemes, count)
        times = np.arange(count) / self.fps
        heard = at_front_end_level(audio, self.sample_rate)     # as inference hears audio
        windows = np.stack([audio_window(heard, t, self.audio_samples, self.sample_rate)
                            for t in times])
        return PseudoClip(f"{CLIP_PREFIX}{index:04d}", expression, windows,
                          pingpong_indices(count, self.subject.num_frames),
                          frame_index=np.arange(count), time_s=times.astype(np.float32))

    def preview(self, path: str) -> str:
        """Writes the viseme classes' renders side by side (labelled) to `path` (PNG)."""
        from metatalk_jax.media.video_write import write_png
        expressions = visemes.viseme_expressions(self.shapes, self.table,
                                                     float(self.settings.closed_gap))
        image = viseme_preview_image(self.subject, self.model, expressions,
                                     visemes.VISEME_CLASSES,
                                     int(self.settings.preview_resolution))
        return write_png(path, image)


def viseme_preview_image(subject: Subject, model, expressions: np.ndarray, labels,
                         resolution: int) -> np.ndarray:
    """uint8 [R + 20, C * R, 3]: the subject's face model rendered with each of the C
    expressions [C, E] (with the pose, lighting and crop of its most frontal frame) side by
    side, each labelled underneath."""
    import cv2
    import jax
    import jax.numpy as jnp

    from metatalk_jax.subject.face_model import subject_camera
    from metatalk_jax.subject.conditioning import crop_renders

    coeffs = subject.coefficients
    angles = np.asarray(coeffs["angles"], np.float32)
    frame = int(np.argmin(np.abs(angles[:, :2]).sum(1)))    # least pitch + yaw
    count = len(expressions)
    fixed = [jnp.broadcast_to(jnp.asarray(coeffs[name][frame], jnp.float32),
                              (count, np.shape(coeffs[name])[1]))
             for name in ("gamma", "angles", "translation")]
    screen = subject.crop_boxes().screen_transform(resolution)[[frame] * count]
    camera = subject_camera(subject, resolution)
    # One compiled program: run op by op, the rasterizer takes several times longer.
    out = jax.jit(lambda m, *c: crop_renders(m, camera, *c))(
        model.as_jax(), jnp.asarray(expressions, jnp.float32), *fixed, jnp.asarray(screen))
    alpha = np.asarray(out.alpha)[..., None]
    tiles = np.asarray(out.image) * alpha + 0.15 * (1.0 - alpha)
    tiles = np.clip(np.rint(tiles * 255.0), 0, 255).astype(np.uint8)
    label_height = 20
    canvas = np.full((resolution + label_height, count * resolution, 3), 38, np.uint8)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        x = i * resolution
        canvas[:resolution, x:x + resolution] = tile
        cv2.putText(canvas, str(label)[:14], (x + 3, resolution + 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.36, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas


def generate_viseme_corpus(subject_dir: str, out_dir: str, config, *, log=None) -> dict:
    """Writes (or completes) the viseme-teacher corpus of the subject at `subject_dir` in
    `out_dir`; `config` is configs/pseudo.py's (its `visemes` settings, clips_per_part,
    validation_fraction, previews, model). Returns a summary dict: clips_total,
    clips_already_done, clips_written, frames_written, parts, seconds, preview.
    Bad inputs raise ValueError with a one-line message (no espeak-ng: SpeechUnavailable)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    start = time.perf_counter()
    settings = config.visemes
    subject = load_subject(subject_dir)
    sentences = (read_sentences(settings.sentences_file) if settings.sentences_file
                 else list(BUILTIN_SENTENCES))
    if int(settings.max_clips) > 0:
        sentences = sentences[:int(settings.max_clips)]
    teacher = VisemeTeacher(subject, config)
    writer = PseudoVideoWriter(
        out_dir, expression_dim=teacher.expression_dim, audio_samples=teacher.audio_samples,
        subject_fingerprint=str(subject.meta["fingerprint"]), fps=teacher.fps,
        sample_rate=teacher.sample_rate, validation_fraction=float(config.validation_fraction))
    done = writer.done_clips()
    todo = [(i, text) for i, text in enumerate(sentences)
            if f"{CLIP_PREFIX}{i:04d}" not in done]
    summary = {"teacher": "visemes", "clips_total": len(sentences),
               "clips_already_done": len(sentences) - len(todo), "clips_written": 0,
               "frames_written": 0, "parts": [], "preview": None}
    preview_path = os.path.join(out_dir, PREVIEWS, PREVIEW_NAME)
    if config.previews and (todo or not os.path.exists(preview_path)):
        summary["preview"] = teacher.preview(preview_path)
    if not todo:
        log(f"pseudo: all {len(sentences)} viseme clips are already in {out_dir}")
    progress = Progress("viseme clips", len(todo), enabled=bool(todo))
    pending: list[PseudoClip] = []
    try:
        for index, sentence in todo:
            clip = teacher.clip(index, sentence)
            pending.append(clip)
            summary["clips_written"] += 1
            summary["frames_written"] += len(clip.source_frame)
            progress.update(1)
            if len(pending) >= int(config.clips_per_part):
                summary["parts"].append(writer.write_part(pending))
                pending = []
        if pending:
            summary["parts"].append(writer.write_part(pending))
    finally:
        progress.close()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary
