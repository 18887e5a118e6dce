"""LSE-D, LSE-C and the AV offset: syncnet_python's SyncNetInstance.evaluate, number for number.

    model, variables = load_syncnet("syncnet_v2.model")
    result = lse_scores(frames_rgb, audio, fps=25, variables=variables, source="out.mp4")
    result.lse_d, result.lse_c, result.offset

The computation (joonson/syncnet_python SyncNetInstance.py, as Wav2Lip's evaluation/scores_LSE
runs it, vshift 15, 25 fps, 16 kHz):
  * MFCC of the int16-scaled samples (media.audio_features.mfcc, python_speech_features
    defaults), 100 rows per second; N = min(T frames, floor(samples / 640)) - 5 windows.
  * window i: frames i..i+4 (224x224, BGR, raw 0-255) -> lip embedding; MFCC rows 4i..4i+19
    -> audio embedding (1024-d each).
  * distances[i, j] = || v_i - a_{i+j-15} + 1e-6 ||_2 (torch's pairwise_distance, its eps
    included), audio embeddings outside 0..N-1 being zeros (calc_pdist pads with zeros);
    mean over i -> 31 values. LSE-D = min, LSE-C = median - min, offset = 15 - argmin.
  * per-frame confidence = median(mean distances) - distances[i, argmin], median-filtered over 9
    windows (scipy.signal.medfilt), as the reference prints it.
Offset sign: offset k means the sound of video frame t sits in audio window t - k, i.e. the
audio runs k frames ahead of the picture (k / 25 s); 0 is in sync.

Which frames: generated videos are scored on the whole frame resized to 224x224 (Wav2Lip's
SyncNetInstance_calc_scores resizes every frame with cv2's default bilinear); real videos on
face-track crops (metatalk_jax.eval.face_track). `lse_for_video` decodes a file the way the
reference does (ffmpeg -> JPEG files -> cv2.imread; audio as 16 kHz pcm_s16le), so its frames are
the reference's frames, JPEG artefacts included.

Refused (one-line ValueError naming the source): fps other than 25 (the reference hard-codes 4
MFCC rows and 640 samples per frame: resample with read_frames(path, fps=25)), and clips with
fewer than vshift + 1 = 16 windows (21 frames, 0.84 s): with fewer, some of the 31 offsets compare
every frame only against the zero padding, which syncnet_python would still average into its
scores.

Speed: the embeddings run under one jit per branch at a fixed batch (the last batch is padded),
so a clip of any length compiles once. The frames are held in memory as uint8 [T,224,224,3]
(150 kB per frame: 2.3 GB for 10 minutes at 25 fps).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal

from metatalk_jax.errors import InputError
from metatalk_jax.fixed_batches import index_batches, pad_to_batch
from metatalk_jax.media import audio_features
from metatalk_jax.models import syncnet as sn

VSHIFT = 15
SYNCNET_FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // SYNCNET_FPS    # 640
PAIRWISE_EPS = 1e-6                               # torch.nn.functional.pairwise_distance default
CONFIDENCE_MEDIAN_KERNEL = 9
DEFAULT_BATCH = 20                                # syncnet_python's --batch_size

Embedder = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LseResult:
    """SyncNet scores of one clip.

    lse_d: min over offsets of the mean embedding distance (lower = better sync).
    lse_c: median - min of the 31 mean distances (higher = more confident sync).
    offset: AV offset in frames (1/25 s), vshift - argmin; see the module doc for the sign.
    distances: [2*vshift+1] float32 mean distance per shift; index j is offset vshift - j.
    frame_distances: [N, 2*vshift+1] float32 per-window distances (the reference's dists_npy).
    frame_confidence: [N] float32 median-filtered per-window confidence (the reference's fconfm).
    """
    lse_d: float
    lse_c: float
    offset: int
    distances: np.ndarray
    frame_distances: np.ndarray
    frame_confidence: np.ndarray

    @property
    def num_windows(self) -> int:
        return int(self.frame_distances.shape[0])

    def to_json(self) -> dict:
        """The scalars and the 31 distances as JSON data."""
        return {"lse_d": self.lse_d, "lse_c": self.lse_c, "offset": self.offset,
                "num_windows": self.num_windows,
                "distances": [float(d) for d in self.distances]}


# ------------------------------------------------------------------------------ distances, scores

def offset_distances(video_features, audio_features, vshift: int = VSHIFT) -> np.ndarray:
    """calc_pdist: float32 [N, 2*vshift+1], entry [i, j] = ||v_i - a_{i+j-vshift} + eps||_2 with
    zero audio features outside 0..N-1. video_features, audio_features: [N, D]."""
    v = np.asarray(video_features, np.float32)
    a = np.asarray(audio_features, np.float32)
    if v.ndim != 2 or v.shape != a.shape:
        raise ValueError(f"offset_distances: video and audio features must both be [N,D], got "
                         f"{v.shape} and {a.shape}")
    n, width = v.shape[0], 2 * vshift + 1
    padded = np.concatenate([np.zeros((vshift, v.shape[1]), np.float32), a,
                             np.zeros((vshift, v.shape[1]), np.float32)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, (width, v.shape[1]))[:n, 0]
    diff = v[:, None, :] - windows + np.float32(PAIRWISE_EPS)           # [N, width, D]
    return np.sqrt(np.einsum("nwd,nwd->nw", diff, diff, dtype=np.float32))


def lse_from_features(video_features, audio_features, vshift: int = VSHIFT) -> LseResult:
    """LseResult from per-window embeddings [N, D] (window i = frames i..i+4, MFCC 4i..4i+19)."""
    frame_distances = offset_distances(video_features, audio_features, vshift)
    if frame_distances.shape[0] == 0:
        raise ValueError("lse_from_features: no windows")
    distances = frame_distances.mean(axis=0, dtype=np.float32)
    best = int(np.argmin(distances))
    # An odd count (31): the median is the middle value, as torch.median returns.
    median = np.float32(np.median(distances))
    confidence = median - frame_distances[:, best]
    filtered = signal.medfilt(confidence.astype(np.float64), CONFIDENCE_MEDIAN_KERNEL)
    return LseResult(lse_d=float(distances[best]), lse_c=float(median - distances[best]),
                     offset=int(vshift - best), distances=distances,
                     frame_distances=frame_distances,
                     frame_confidence=filtered.astype(np.float32))


# ------------------------------------------------------------------------------ windows, features

def window_count(num_frames: int, num_samples: int) -> int:
    """syncnet_python's lastframe: min(frames, floor(samples / 640)) - 5 (may be <= 0)."""
    return min(int(num_frames), int(num_samples) // SAMPLES_PER_FRAME) - (sn.LIP_FRAMES)


def resize_frames_224(frames) -> np.ndarray:
    """uint8 [T,H,W,3] -> [T,224,224,3] with cv2.resize's default (bilinear) as Wav2Lip's
    evaluation; frames already 224x224 come back unchanged."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    size = sn.LIP_SIZE
    if frames.shape[1:3] == (size, size):
        return frames
    import cv2

    return np.stack([cv2.resize(f, (size, size)) for f in frames])


def syncnet_embedders(variables, batch_size: int = DEFAULT_BATCH) -> tuple[Embedder, Embedder]:
    """(lip_embed, audio_embed) running SyncNet under jit at a fixed batch.

    lip_embed: uint8 RGB windows [n,5,224,224,3] -> float32 [n,1024] (flipped to BGR and cast to
    0-255 floats on the device); audio_embed: MFCC windows [n,13,20] -> [n,1024]. Any n works:
    inputs are cut into batches of `batch_size`, the last one padded, so each compiles once.
    """
    model = sn.SyncNet()

    @jax.jit
    def lips(params, windows_rgb):
        bgr = windows_rgb[..., ::-1].astype(jnp.float32)
        return model.apply(params, bgr, method=sn.SyncNet.forward_lip)

    @jax.jit
    def audio(params, mfcc):
        return model.apply(params, mfcc[..., None], method=sn.SyncNet.forward_aud)

    params = jax.device_put(variables)
    return (lambda x: _batched(lips, params, x, batch_size),
            lambda x: _batched(audio, params, x, batch_size))


def _batched(fn, params, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = []
    for real, _ in index_batches(len(inputs), batch_size):
        chunk = pad_to_batch(inputs[real[0]:real[-1] + 1], batch_size)
        outputs.append(np.asarray(fn(params, chunk))[:len(real)])
    return np.concatenate(outputs).astype(np.float32)


def lip_windows(frames, start: int, stop: int) -> np.ndarray:
    """uint8 [stop-start, 5, H, W, 3]: window i holds frames i..i+4."""
    index = np.arange(start, stop)[:, None] + np.arange(sn.LIP_FRAMES)[None, :]
    return np.asarray(frames)[index]


def syncnet_features(frames, mfcc_rows, num_windows: int, lip_embed: Embedder,
                     audio_embed: Embedder, chunk: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(video [N,D], audio [N,D]) embeddings of windows 0..N-1; frames RGB uint8 [T,224,224,3],
    mfcc_rows [R,13]. Lip windows are built `chunk` at a time so the 5x copy stays small."""
    audio_in = audio_features.mfcc_windows(mfcc_rows, num_windows, SYNCNET_FPS)   # [N,13,20]
    video = [lip_embed(lip_windows(frames, s, min(s + chunk, num_windows)))
             for s in range(0, num_windows, chunk)]
    return np.concatenate(video), audio_embed(audio_in)


def lse_scores(frames, audio, fps: float = SYNCNET_FPS, variables=None, *,
               source: str = "<frames>", vshift: int = VSHIFT, batch_size: int = DEFAULT_BATCH,
               embedders: tuple[Embedder, Embedder] | None = None) -> LseResult:
    """SyncNet scores of a clip.

    frames: uint8 RGB [T,H,W,3] (resized to 224x224 unless already; pass face-track crops for
    real videos). audio: float32 [N] mono samples in [-1,1] at 16 kHz (scaled by 32768 for the
    MFCC, as the reference reads int16). fps: must be 25. variables: converted SyncNet weights
    (`load_syncnet`); `embedders` = (lip_embed, audio_embed) replaces them (tests, reuse of one
    compiled pair across clips: see `syncnet_embedders`). source: names the clip in errors.
    """
    if abs(float(fps) - SYNCNET_FPS) > 1e-6:
        raise ValueError(f"{source}: SyncNet scores need 25 fps video (the reference assumes 4 "
                         f"MFCC rows per frame), got {fps:g}; resample with read_frames(path, "
                         "fps=25)")
    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"{source}: audio must be float [N] samples at 16 kHz, got "
                         f"{audio.dtype} {audio.shape}")
    frames = resize_frames_224(frames)
    num_windows = window_count(len(frames), audio.size)
    if num_windows < vshift + 1:
        raise InputError(
            f"{source}: too short for SyncNet's +-{vshift}-frame offset search: {len(frames)} "
            f"frames and {audio.size / SAMPLE_RATE:.2f} s of audio give {max(num_windows, 0)} "
            f"windows, {vshift + 1} needed ({vshift + 1 + sn.LIP_FRAMES} frames, "
            f"{(vshift + 1 + sn.LIP_FRAMES) / SYNCNET_FPS:.2f} s)")
    if embedders is None:
        if variables is None:
            raise ValueError(f"{source}: lse_scores needs SyncNet variables or embedders")
        embedders = syncnet_embedders(variables, batch_size)
    mfcc_rows = audio_features.mfcc(audio.astype(np.float32), SAMPLE_RATE)
    video, audio_emb = syncnet_features(frames, mfcc_rows, num_windows, *embedders)
    return lse_from_features(video, audio_emb, vshift)


# ------------------------------------------------------------------------------ files

def read_video_like_syncnet_python(path) -> tuple[np.ndarray, np.ndarray]:
    """(frames RGB uint8 [T,H,W,3], audio float32 [N] at 16 kHz) decoded as the reference does:
    ffmpeg writes every frame as a JPEG (`-f image2 %06d.jpg`, ffmpeg's default quality) and
    cv2.imread reads them back; the audio is ffmpeg's 16 kHz mono pcm_s16le, divided by 32768."""
    import cv2

    from metatalk_jax.media.ffmpeg_tools import check_input_file, file_arg, run_ffmpeg

    path = check_input_file(path)
    with tempfile.TemporaryDirectory(prefix="syncnet_frames_") as tmp:
        run_ffmpeg(["-y", "-i", file_arg(path), "-threads", "1", "-f", "image2",
                    os.path.join(tmp, "%06d.jpg")], path, what="could not extract the frames")
        names = sorted(glob.glob(os.path.join(tmp, "*.jpg")))
        frames = np.stack([cv2.imread(n)[..., ::-1] for n in names]) if names else None
    if frames is None:
        raise InputError(f"{path}: no video frames")
    pcm = run_ffmpeg(["-i", file_arg(path), "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                      "-acodec", "pcm_s16le", "-f", "s16le", "pipe:1"], path,
                     what="could not decode the audio").stdout
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return np.ascontiguousarray(frames), audio


def lse_for_video(path, variables=None, *, real: bool = False, backend=None,
                  batch_size: int = DEFAULT_BATCH,
                  embedders: tuple[Embedder, Embedder] | None = None) -> LseResult:
    """Scores a 25 fps video file with its own audio track.

    real=False (generated videos, Wav2Lip's calculate_scores_LRS): the whole frame resized to 224.
    real=True (calculate_scores_real_videos): one face tracked with `backend` (default dlib) and
    cropped as syncnet_python's run_pipeline crops (eval.face_track.face_track_crops).
    """
    frames, audio = read_video_like_syncnet_python(path)
    if real:
        from metatalk_jax.eval.face_track import face_track_crops

        frames = face_track_crops(frames, source=os.fspath(path), backend=backend)
    return lse_scores(frames, audio, SYNCNET_FPS, variables, source=os.fspath(path),
                      batch_size=batch_size, embedders=embedders)

