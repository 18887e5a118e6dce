"""The ffmpeg media layer: probing, streaming frame reads, audio decode/checks, mp4 writing.

Inputs are generated in temp folders with the same ffmpeg binary (lavfi test sources, sine
tones, raw frames of known colours), so every expectation is known independently of the code
under test: sizes, rates and durations we asked for, pixels we wrote, the tone's frequency.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from metatalk_jax.media import audio_files, ffmpeg_tools, video_read, video_write
from metatalk_jax.media.audio_files import check_speech_audio, load_audio, write_wav
from metatalk_jax.media.ffmpeg_tools import MediaError, ffmpeg_exe, parse_ffmpeg_report
from metatalk_jax.media.video_read import count_frames, probe_video, read_frames
from metatalk_jax.media.video_write import Mp4Writer

SINE_STEREO = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
               "-af", "pan=stereo|c0=c0|c1=c0"]  # lavfi's sine: amplitude 1/8, both channels


def make(path, *args, stdin: bytes | None = None) -> str:
    """Runs ffmpeg to create `path` (test inputs only)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, str(path)]
    subprocess.run(cmd, input=stdin, check=True,
                   stdin=None if stdin is not None else subprocess.DEVNULL)
    return str(path)


def lavfi_testsrc(size: str, rate: str, seconds: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]


def dominant_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum)) * sample_rate / len(audio)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Small generated files, built once: name -> path."""
    d = tmp_path_factory.mktemp("media")
    files = {
        # 2.0 s at 30 fps with a stereo 440 Hz AAC track.
        "mp4": make(d / "talk.mp4", *lavfi_testsrc("160x120", "30", 2.0),
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
                    "-af", "pan=stereo|c0=c0|c1=c0", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac"),
        "avi": make(d / "clip.avi", *lavfi_testsrc("176x144", "25", 1.0), "-c:v", "mpeg4"),
        "webm": make(d / "clip.webm", *lavfi_testsrc("128x96", "25", 1.0), "-c:v", "libvpx",
                     "-deadline", "realtime", "-b:v", "500k"),
        # NTSC rate: ffmpeg prints "29.97 fps"; the real rate is 30000/1001.
        "mkv": make(d / "clip.mkv", *lavfi_testsrc("96x64", "30000/1001", 1.0), "-c:v", "ffv1"),
        "silent_mp4": make(d / "mute.mp4", *lavfi_testsrc("64x48", "25", 1.0), "-c:v", "libx264",
                           "-pix_fmt", "yuv420p"),
        "wav": make(d / "tone.wav", *SINE_STEREO),
        "mp3": make(d / "tone.mp3", *SINE_STEREO),
        "m4a": make(d / "tone.m4a", *SINE_STEREO, "-c:a", "aac"),
        "aac": make(d / "tone.aac", *SINE_STEREO, "-c:a", "aac"),
        "flac": make(d / "tone.flac", *SINE_STEREO),
    }
    return files


# -- probing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, size, fps, duration, codec, audio", [
    ("mp4", (160, 120), 30.0, 2.0, "h264", True),
    ("avi", (176, 144), 25.0, 1.0, "mpeg4", False),
    ("webm", (128, 96), 25.0, 1.0, "vp8", False),
    ("mkv", (96, 64), 30000 / 1001, 1.0, "ffv1", False),
])
def test_probe_video_reports_what_was_generated(media, name, size, fps, duration, codec, audio):
    info = probe_video(media[name])
    assert (info.width, info.height) == size
    assert info.fps == pytest.approx(fps, abs=1e-6)
    assert info.duration_s == pytest.approx(duration, abs=0.05)
    assert info.num_frames == round(duration * fps)
    assert info.codec == codec and info.has_audio == audio


def test_report_parser_on_canned_ffmpeg_text():
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.m4a':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 299 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, 5.1(side), fltp
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, progressive), 300x300, 90k tbr (attached pic)
"""
    r = parse_ffmpeg_report(text)
    assert r.duration_s == pytest.approx(62.5)
    assert not r.has_video  # cover art is not a video
    assert (r.has_audio, r.sample_rate, r.channels, r.audio_codec) == (True, 48000, 6, "aac")
    r = parse_ffmpeg_report("  Stream #0:0: Video: h264 (High) (avc1 / 0x31637661), "
                            "yuv420p(tv, bt709, progressive), 1920x1080 [SAR 1:1 DAR 16:9], "
                            "23.98 fps, 23.98 tbr, 24k tbn\n")
    assert (r.width, r.height, r.video_codec) == (1920, 1080, "h264")
    assert r.fps == pytest.approx(24000 / 1001)


# -- reading frames ---------------------------------------------------------------------------


def test_frame_counts_native_and_resampled(media):
    path = media["mp4"]
    native = list(read_frames(path))
    assert len(native) == 60 and native[0].shape == (120, 160, 3) and native[0].dtype == np.uint8
    assert sum(1 for _ in read_frames(path, fps=25)) == 50
    assert count_frames(path) == 60 and count_frames(path, fps=25) == 50
    assert len(list(read_frames(path, fps=25, max_frames=7))) == 7
    assert len(list(read_frames(media["webm"], fps=10))) == 10


def test_resampled_frame_i_is_the_picture_at_time_i_over_fps(tmp_path):
    # 10 fps source whose frame k is grey level 20*k; read at 5 fps -> frame i = source 2*i.
    frames = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None, None] * 20, 8, axis=1)
    frames = np.ascontiguousarray(np.broadcast_to(frames, (10, 8, 8, 3)))
    path = make(tmp_path / "ramp.mkv", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "8x8",
                "-framerate", "10", "-i", "pipe:0", "-c:v", "ffv1", "-pix_fmt", "bgr0",
                stdin=frames.tobytes())
    got = [f[0, 0, 0] for f in read_frames(path, fps=5)]
    assert got == [20 * 2 * i for i in range(5)]


def test_solid_colour_frames_read_back_exactly_at_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    frames = np.empty((6, 17, 33, 3), np.uint8)  # odd width and height
    frames[:] = colours[:, None, None, :]
    frames[2, 5, 7] = (1, 2, 3)  # one odd pixel, to catch row-stride mistakes
    path = make(tmp_path / "solid.mkv", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "33x17",
                "-framerate", "25", "-i", "pipe:0", "-c:v", "ffv1", "-pix_fmt", "bgr0",
                stdin=frames.tobytes())
    info = probe_video(path)
    assert (info.width, info.height) == (33, 17)
    got = np.stack(list(read_frames(path)))
    np.testing.assert_array_equal(got, frames)
    got[0, 0, 0] = 0  # frames are writable copies


def test_rotation_metadata_gives_upright_frame_size(media, tmp_path):
    path = make(tmp_path / "rot.mp4", "-display_rotation", "90", "-i", media["silent_mp4"],
                "-c", "copy")
    info = probe_video(path)
    assert (info.width, info.height) == (48, 64)
    assert next(iter(read_frames(path))).shape == (64, 48, 3)


class _RecordingPopen(subprocess.Popen):
    started: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _RecordingPopen.started.append(self)


def test_stopping_early_kills_and_reaps_ffmpeg(media, monkeypatch):
    monkeypatch.setattr(video_read.subprocess, "Popen", _RecordingPopen)
    _RecordingPopen.started = []
    frames = read_frames(media["mp4"])
    next(frames)
    frames.close()
    for _ in read_frames(media["mp4"]):
        break  # the abandoned generator is closed when dropped
    decoders = [p for p in _RecordingPopen.started if "rawvideo" in p.args]  # not the probes
    assert len(decoders) == 2
    for proc in decoders:
        assert proc.returncode is not None  # waited for: finished, not a zombie
        assert not os.path.exists(f"/proc/{proc.pid}") or _is_not_ours(proc.pid)


def _is_not_ours(pid: int) -> bool:
    """A reaped pid may be reused by an unrelated process; ours would be ffmpeg, our child."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
    except OSError:
        return True


def test_ffmpeg_dying_mid_stream_raises_media_error(media, monkeypatch):
    monkeypatch.setattr(video_read.subprocess, "Popen", _RecordingPopen)
    _RecordingPopen.started = []
    frames = read_frames(media["mp4"])
    next(frames)
    decoder = [p for p in _RecordingPopen.started if "rawvideo" in p.args][0]
    decoder.kill()  # stands in for a crash or an I/O error inside ffmpeg
    with pytest.raises(MediaError) as err:
        for _ in frames:
            pass
    message = str(err.value)
    assert message.startswith(media["mp4"] + ": ") and "\n" not in message
    assert "decoding stopped" in message or "inside frame" in message


def test_truncated_file_gives_the_frames_that_are_there(media, tmp_path):
    with open(media["avi"], "rb") as f:
        data = f.read()
    broken = tmp_path / "cut.avi"
    broken.write_bytes(data[: len(data) // 3])
    assert 0 < len(list(read_frames(str(broken)))) < 25


# -- audio ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, exact_length", [
    ("wav", True), ("flac", True), ("mp3", True), ("m4a", True), ("aac", False), ("mp4", True)])
def test_load_audio_resamples_mixes_down_and_keeps_the_tone(media, name, exact_length):
    audio = load_audio(media[name])
    seconds = 2.0 if name == "mp4" else 1.0
    assert audio.dtype == np.float32 and audio.ndim == 1
    if exact_length:
        assert abs(len(audio) - seconds * 16000) <= 1
    else:  # raw ADTS has no edit list, so the encoder's priming/padding samples stay
        assert abs(len(audio) - seconds * 16000) <= 0.06 * 16000
    assert dominant_hz(audio, 16000) == pytest.approx(440, abs=2)
    # Identical channels of amplitude 1/8: the mono mix is their average, not their sum.
    assert np.percentile(np.abs(audio), 99.9) == pytest.approx(0.125, abs=0.015)


def test_load_audio_other_rate(media):
    audio = load_audio(media["wav"], sample_rate=8000)
    assert abs(len(audio) - 8000) <= 1 and dominant_hz(audio, 8000) == pytest.approx(440, abs=2)


def test_check_speech_audio(tmp_path):
    t = np.arange(16000) / 16000
    check_speech_audio(0.1 * np.sin(2 * np.pi * 200 * t), 16000, "ok.wav")  # passes
    with pytest.raises(MediaError) as err:
        check_speech_audio(np.zeros(16000, np.float32), 16000, "quiet.wav")
    assert str(err.value).startswith("quiet.wav: audio is silent")
    with pytest.raises(MediaError) as err:
        check_speech_audio(np.full(3200, 0.5, np.float32), 16000, "short.wav")
    assert str(err.value) == "short.wav: audio is 0.20 s long; at least 0.50 s is needed"
    with pytest.raises(MediaError):  # -70 dBFS noise is below the -60 dBFS default
        check_speech_audio(10 ** (-70 / 20) * np.sign(np.sin(2 * np.pi * 50 * t)), 16000, "x")


def test_write_wav_round_trip(tmp_path):
    import wave

    t = np.arange(8000) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    audio[0] = 2.0  # clipped to full scale
    path = write_wav(str(tmp_path / "sub" / "out.wav"), audio, 16000)
    with wave.open(path) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == \
            (1, 2, 16000, 8000)
        pcm = np.frombuffer(w.readframes(8000), "<i2")
    assert pcm[0] == 32767
    np.testing.assert_allclose(pcm[1:] / 32767, audio[1:], atol=1 / 32767)
    np.testing.assert_allclose(load_audio(path)[1:], audio[1:], atol=1e-4)
    assert os.listdir(tmp_path / "sub") == ["out.wav"]


# -- writing mp4 ------------------------------------------------------------------------------


COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 100, 50), (30, 60, 90)],
                   np.uint8)


def test_mp4_writer_h264_with_audio(tmp_path):
    t = np.arange(16000) / 16000
    tone = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    path = str(tmp_path / "out.mp4")
    with Mp4Writer(path, 25, audio=tone, sample_rate=16000) as w:
        for i in range(25):
            frame = np.empty((48, 64, 3), np.float32)
            frame[:] = COLOURS[i % 5] / 255.0  # float input path
            w.write(frame)
    assert os.listdir(tmp_path) == ["out.mp4"]  # no temp video or temp wav left
    info = probe_video(path)
    assert (info.codec, info.has_audio, info.width, info.height) == ("h264", True, 64, 48)
    frames = list(read_frames(path))
    assert len(frames) == 25
    for i, frame in enumerate(frames):
        assert np.abs(frame.astype(int) - COLOURS[i % 5]).max() <= 6
    audio = load_audio(path)
    assert dominant_hz(audio, 16000) == pytest.approx(330, abs=2)
    assert abs(len(audio) - 16000) < 0.05 * 16000


def test_mp4_writer_pads_odd_sizes_by_repeating_the_edge(tmp_path):
    path = str(tmp_path / "odd.mp4")
    frame = np.zeros((33, 45, 3), np.uint8)
    frame[:, -1] = (0, 200, 0)  # last column green; the pad column must be green too
    with Mp4Writer(path, 10, crf=0, preset="ultrafast") as w:
        w.write(frame)
        w.write(frame)
    info = probe_video(path)
    assert (info.width, info.height) == (46, 34)
    back = next(iter(read_frames(path)))
    assert np.abs(back[:, -1].astype(int) - (0, 200, 0)).max() <= 8


def test_mp4_writer_exception_leaves_nothing(tmp_path):
    path = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(str(path), 25, audio=np.zeros(1600, np.float32)) as w:
            for _ in range(3):
                w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("render failed")
    assert os.listdir(tmp_path) == []


def test_mp4_writer_rejects_changing_frame_size(tmp_path):
    with pytest.raises(ValueError):
        with Mp4Writer(str(tmp_path / "x.mp4"), 25) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            w.write(np.zeros((16, 32, 3), np.uint8))
    assert os.listdir(tmp_path) == []


def test_mp4_writer_falls_back_to_mpeg4_without_libx264(tmp_path, monkeypatch):
    monkeypatch.setattr(video_write, "has_encoder", lambda name: False)
    path = str(tmp_path / "fallback.mp4")
    with pytest.warns(RuntimeWarning, match="libx264"):
        with Mp4Writer(path, 25) as w:
            for i in range(5):
                w.write(np.full((32, 48, 3), COLOURS[i], np.uint8))
    assert probe_video(path).codec == "mpeg4"
    assert len(list(read_frames(path))) == 5


def test_this_ffmpeg_has_libx264():
    assert ffmpeg_tools.has_encoder("libx264")
    assert not ffmpeg_tools.has_encoder("no-such-encoder")


# -- errors -----------------------------------------------------------------------------------


def _one_line_error(call, path) -> str:
    with pytest.raises(MediaError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path) + ": ")
    assert os.path.basename(str(path)) in message.split(": ")[0]
    return message


def test_errors_are_one_line_and_name_the_file(media, tmp_path):
    missing = tmp_path / "clip.mp4"
    assert _one_line_error(lambda: probe_video(missing), missing).endswith(": no such file")
    _one_line_error(lambda: read_frames(missing), missing)  # raised at call time, not lazily
    _one_line_error(lambda: load_audio(missing), missing)

    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n")
    msg = _one_line_error(lambda: probe_video(text), text)
    assert msg == f"{text}: not a video (ffmpeg: Invalid data found when processing input)"
    _one_line_error(lambda: load_audio(text), text)

    mute = media["silent_mp4"]
    assert _one_line_error(lambda: load_audio(mute), mute) == f"{mute}: has no audio track"
    assert _one_line_error(lambda: probe_video(media["wav"]), media["wav"]).endswith(
        "has no video stream")

    clip = str(tmp_path / "speech.wav")
    write_wav(clip, np.zeros(16000, np.float32), 16000)
    _one_line_error(lambda: check_speech_audio(load_audio(clip), 16000, clip), clip)
    write_wav(clip, np.full(3200, 0.3, np.float32), 16000)
    msg = _one_line_error(lambda: check_speech_audio(load_audio(clip), 16000, clip), clip)
    assert msg.endswith("audio is 0.20 s long; at least 0.50 s is needed")
    assert audio_files.rms_dbfs(np.zeros(4)) == -np.inf
