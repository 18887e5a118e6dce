"""LSE-D / LSE-C / AV offset (metatalk_jax.eval.lse) against syncnet_python's formulas, and the
face-track crop (metatalk_jax.eval.face_track) against the crop geometry of run_pipeline.py."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
python_speech_features = pytest.importorskip("python_speech_features")

from metatalk_jax.convert.syncnet_keys import convert_syncnet     # noqa: E402
from metatalk_jax.eval import face_track, lse                     # noqa: E402
from metatalk_jax.media import audio_features                     # noqa: E402
from tests.support.torch_syncnet_reference import (TorchSyncNet, randomize,  # noqa: E402
                                           reference_calc_pdist, reference_evaluate)

SR, FPS, SPF = 16000, 25, 640


# -- distances and scores -------------------------------------------------------------------------

def test_offset_distances_equal_the_reference_calc_pdist():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((23, 16)).astype(np.float32)
    a = rng.standard_normal((23, 16)).astype(np.float32)
    expected = torch.stack(
        reference_calc_pdist(torch.from_numpy(v), torch.from_numpy(a), 15)).numpy()
    got = lse.offset_distances(v, a, 15)
    assert got.shape == (23, 31)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # torch's eps sits inside the norm: identical vectors are ||eps * 1|| = 4e-6 apart, not 0
    same = lse.offset_distances(v, v, 15)[:, 15]
    np.testing.assert_allclose(same, 1e-6 * np.sqrt(16), rtol=1e-3)


@pytest.mark.parametrize("k", [-9, -1, 0, 3, 14])
def test_constructed_features_give_offset_k(k):
    """Audio window m carries the code of video frame m + k: the sound of frame t is k windows
    earlier in the audio, which syncnet_python reports as offset +k."""
    rng = np.random.default_rng(100 + k)
    n = 40
    codes = rng.standard_normal((n + 40, 32)).astype(np.float32)
    video = codes[20:20 + n]
    audio = codes[20 + k:20 + k + n] + 0.05 * rng.standard_normal((n, 32)).astype(np.float32)
    result = lse.lse_from_features(video, audio)
    assert result.offset == k
    assert result.distances.shape == (31,) and int(np.argmin(result.distances)) == 15 - k
    assert result.lse_c > 1.0
    assert result.lse_c == pytest.approx(float(np.median(result.distances)) - result.lse_d,
                                         abs=1e-6)
    # frames paired with real audio at the best shift sit at ~0.05 * sqrt(32) = 0.28
    inside = slice(max(0, k), n + min(0, k))   # frames i with 0 <= i - k < n
    assert np.all(result.frame_distances[inside, 15 - k] < 0.5)
    assert result.frame_confidence.shape == (n,) and np.median(result.frame_confidence) > 1.0


# -- windows --------------------------------------------------------------------------------------

def test_windows_are_the_reference_slices():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    rows = rng.standard_normal((130, 13)).astype(np.float32)
    assert lse.window_count(30, 30 * SPF + 639) == 25
    assert lse.window_count(40, 26 * SPF) == 21        # audio-limited: floor(samples / 640) - 5
    windows = lse.lip_windows(frames, 0, 25)
    mfcc = audio_features.mfcc_windows(rows, 25, FPS)
    for i in range(25):
        np.testing.assert_array_equal(windows[i], frames[i:i + 5])
        np.testing.assert_array_equal(mfcc[i], rows[4 * i:4 * i + 20].T)


def _bit_clip(k: int, num_frames: int = 60, size: int = 16):
    """Frames that are bright where bit[t] is 1, and audio with a noise burst in 40 ms slot u
    where bit[u + k] is 1: the sound of frame t plays k frames early."""
    rng = np.random.default_rng(7 + k)
    bits = rng.integers(0, 2, num_frames + 40)
    frames = np.where(bits[20:20 + num_frames, None, None, None] > 0, 200, 20)
    frames = np.broadcast_to(frames, (num_frames, size, size, 3)).astype(np.uint8)
    loud = bits[20 + k:20 + k + num_frames]
    audio = 1e-4 * rng.standard_normal(num_frames * SPF)
    audio += np.repeat(loud, SPF) * 0.5 * rng.uniform(-1, 1, num_frames * SPF)
    return frames, audio.astype(np.float32)


def _bit_embedders():
    """A 'SyncNet' whose embeddings are the bit of the window's first frame: mean brightness of
    frame 0 for the lips, log energy (MFCC column 0) of the window's first two rows (samples
    640 i .. 640 i + 560, inside frame i) for the audio."""
    def lips(windows):
        return ((windows[:, 0].reshape(len(windows), -1).mean(axis=1) > 100)
                .astype(np.float32)[:, None])

    def audio(mfcc):
        return (mfcc[:, 0, :2].mean(axis=1) > 15.0).astype(np.float32)[:, None]
    return lips, audio


@pytest.mark.parametrize("k", [-4, 0, 3])
def test_shifted_clip_reports_its_offset(k):
    frames, audio = _bit_clip(k)
    result = lse.lse_scores(frames, audio, 25, embedders=_bit_embedders(), source="bits.mp4")
    assert result.num_windows == 55
    assert result.offset == k
    assert result.lse_c > 0.2 and result.lse_d < 0.15


def test_too_short_and_wrong_rate_are_refused():
    frames, audio = _bit_clip(0, num_frames=20)
    with pytest.raises(ValueError, match=r"short\.mp4: too short .* give 15 windows, 16 needed"):
        lse.lse_scores(frames, audio, 25, embedders=_bit_embedders(), source="short.mp4")
    frames, audio = _bit_clip(0, num_frames=21)
    assert lse.lse_scores(frames, audio, 25, embedders=_bit_embedders()).num_windows == 16
    with pytest.raises(ValueError, match=r"x\.mp4: SyncNet scores need 25 fps"):
        lse.lse_scores(frames, audio, 30, embedders=_bit_embedders(), source="x.mp4")


# -- the whole evaluation against the reference loop ----------------------------------------------

def test_lse_scores_equal_the_reference_evaluate():
    model = randomize(TorchSyncNet(), seed=9).eval()
    variables, _ = convert_syncnet({k: v.numpy() for k, v in model.state_dict().items()})
    rng = np.random.default_rng(3)
    # 24 frames of smooth random images, 23.5 frames of audio: audio-limited, 18 windows
    base = rng.uniform(0, 255, (24, 7, 7, 3))
    frames = np.clip(np.repeat(np.repeat(base, 32, 1), 32, 2) + rng.normal(0, 8, (24, 224, 224, 3)),
                     0, 255).astype(np.uint8)
    pcm = np.clip(np.round(3000 * rng.standard_normal(int(23.5 * SPF))), -32768, 32767)
    audio = (pcm / 32768).astype(np.float32)        # what the reference's int16 wav holds
    got = lse.lse_scores(frames, audio, 25, variables, batch_size=8)
    rows = python_speech_features.mfcc(pcm.astype(np.int16), SR)   # as SyncNetInstance calls it
    ref = reference_evaluate(model, frames[..., ::-1], audio.size, rows, vshift=15, batch_size=20)
    assert got.num_windows == ref["dists"].shape[0] == 18
    scale = float(ref["dists"].max())
    np.testing.assert_allclose(got.frame_distances, ref["dists"], rtol=0, atol=1e-4 * scale)
    assert got.offset == ref["offset"]
    assert got.lse_d == pytest.approx(ref["min_dist"], rel=1e-4)
    assert got.lse_c == pytest.approx(ref["conf"], abs=1e-4 * scale)
    np.testing.assert_allclose(got.frame_confidence, ref["fconf"], rtol=0, atol=1e-4 * scale)


# -- face-track crops ------------------------------------------------------------------------------

def test_crop_places_the_face_box_as_run_pipeline():
    """A square box of half size s centred at (cx, cy) spans crop columns 0.4/2.8 .. 2.4/2.8 and
    rows 0 .. 2/2.8 of the 224 output (the crop is x +- 1.4 s, y - s .. y + 1.8 s)."""
    frame = np.zeros((400, 500, 3), np.uint8)
    cx, cy, s = 250, 170, 70
    frame[cy - s:cy + s, cx - s:cx + s] = 255
    crop = face_track.crop_face(frame, cx, cy, s)
    assert crop.shape == (224, 224, 3)
    white = crop[..., 0] > 127
    cols = np.flatnonzero(white.any(axis=0))
    rows = np.flatnonzero(white.any(axis=1))
    assert abs(cols[0] - 32) <= 1 and abs(cols[-1] + 1 - 192) <= 1
    assert rows[0] == 0 and abs(rows[-1] + 1 - 160) <= 1
    # near the top-left corner the crop reaches into the reference's grey (110) padding
    corner = face_track.crop_face(frame, 40, 40, 60)
    assert np.all(corner[:20, :20] == face_track.PAD_VALUE)


class _FixedBox:
    """A tracking backend that 'finds' a given box in every frame, with one outlier frame."""

    def __init__(self, box, outlier_frame):
        self.box, self.outlier, self.calls = np.asarray(box, np.float32), outlier_frame, 0

    def detect(self, frame):
        box = self.box + (np.float32([200, 0, 200, 0]) if self.calls == self.outlier else 0)
        self.calls += 1
        return np.concatenate([box, [1.0]]).astype(np.float32)[None]

    def landmarks(self, frame, box):
        return np.zeros((68, 2), np.float32)


def test_face_track_crops_median_filter_the_track():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (20, 300, 400, 3), dtype=np.uint8)
    box = (150, 80, 250, 180)
    crops = face_track.face_track_crops(frames, source="real.mp4", backend=_FixedBox(box, 10))
    assert crops.shape == (20, 224, 224, 3)
    # the single jumped box at frame 10 is filtered out; away from the zero-padded ends of the
    # 13-frame median every crop is the steady box's crop
    for t in (6, 10, 13):
        np.testing.assert_array_equal(crops[t], face_track.crop_face(frames[t], 200, 130, 50))


def test_video_file_is_decoded_as_the_reference_does(tmp_path):
    """A 1.2 s 25 fps clip with a 16 kHz tone: 30 JPEG-decoded frames, 19,200 int16 samples."""
    from metatalk_jax.media.ffmpeg_tools import run_ffmpeg
    path = tmp_path / "tone.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1.2", "-f", "lavfi",
                "-i", "sine=frequency=440:sample_rate=16000:duration=1.2", "-shortest",
                "-c:v", "mpeg4", "-q:v", "2", "-c:a", "pcm_s16le", str(tmp_path / "tone.avi")],
               path)
    frames, audio = lse.read_video_like_syncnet_python(tmp_path / "tone.avi")
    assert frames.shape == (30, 48, 64, 3) and frames.dtype == np.uint8
    assert audio.size == 19200 and np.all(np.round(audio * 32768) == audio * 32768)
    # the 440 Hz tone comes back at ffmpeg's sine level (1/8 of full scale)
    assert np.abs(audio).max() == pytest.approx(0.125, abs=0.01)
    result = lse.lse_for_video(tmp_path / "tone.avi", embedders=_bit_embedders())
    assert result.num_windows == 25
