"""Inference (`python -m metatalk_jax.infer`): the end-to-end video, the background order and
frames, the paste-back, bounded memory, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from metatalk_jax import infer
from metatalk_jax.inference.background import BackgroundFrames, monotonic_runs
from metatalk_jax.inference.face_blend import blend_mask, composite_frame
from metatalk_jax.media.audio_files import write_wav
from metatalk_jax.media.video_read import count_frames, probe_video, read_frames
from metatalk_jax.media.video_read import pingpong_indices
from tests.support.infer_fixtures import REPO, random_a2e, random_renderer
from tests.support.scaled_subject import scaled_subject, synthetic_video

FPS = 25.0


def _speech_like(path, seconds, level=0.3, rate=16000):
    """A 220 Hz tone with a 3 Hz syllable-like envelope."""
    t = np.arange(int(round(seconds * rate))) / rate
    audio = level * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return write_wav(str(path), audio.astype(np.float32), rate)


@pytest.fixture(scope="module")
def checkpoints(carphone_subject, tmp_path_factory):
    subject = str(carphone_subject[0])
    root = tmp_path_factory.mktemp("infer_checkpoints")
    return {"subject": subject,
            "a2e": random_a2e(str(root / "a2e"), subject, 10),
            "renderer": random_renderer(str(root / "renderer"), subject, resolution=32),
            "root": root}


def _run(args, capsys):
    code = infer.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _base_args(ck, audio, out, lip_sync_frames=0):
    return ["--subject", ck["subject"], "--a2e", ck["a2e"], "--renderer", ck["renderer"],
            "--audio", audio, "--out", out, "--lip-sync-frames", str(lip_sync_frames)]


def test_infer_writes_the_video_with_every_frame_and_the_audio(checkpoints, tmp_path, capsys):
    audio = _speech_like(tmp_path / "speech.wav", 5.3)          # longer than the 4 s subject
    out = tmp_path / "out" / "talk.mp4"
    code, stdout, stderr = _run(_base_args(checkpoints, audio, out, lip_sync_frames=12)
                                + ["--preview"], capsys)
    assert code == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    expected_frames = int(5.3 * FPS)                            # floor(5.3 s x 25 fps) = 132
    assert summary["frames"] == expected_frames
    info = probe_video(str(out))
    assert info.has_audio and (info.height, info.width) == (144, 176)
    assert count_frames(str(out)) == expected_frames
    assert abs(info.duration_s - 5.3) < 0.1
    preview = probe_video(summary["preview"])
    # render | output | background | the two mouths, each enlarged to 256 px under a label band
    assert (preview.height, preview.width) == (256 + 22, 5 * 256)
    assert count_frames(summary["preview"]) == expected_frames
    assert sorted(os.listdir(out.parent)) == ["talk.drive.json", "talk.mp4",
                                              "talk.preview.mp4"]     # no temp files
    assert "infer 32px: 132/132 (100%)" in stderr and "ETA" in stderr
    # The drive sidecar: each frame's background frame and its 3DMM mouth opening; the
    # summary's lip sync was measured on the written pixels against them.
    drive = json.loads((out.parent / "talk.drive.json").read_text())
    assert drive["source_frame"] == list(pingpong_indices(expected_frames, 100))
    assert len(drive["drive_opening"]) == expected_frames
    assert 0.0 <= min(drive["drive_opening"]) and max(drive["drive_opening"]) < 1.0
    assert summary["lip_sync"]["frames"] == 12
    assert summary["lip_sync"]["measured_on"].startswith("output pixels")
    # (an untrained renderer draws noise at the mouth, where dlib mostly finds no face: the
    # measure itself is tested in test_pixel_lip_sync.py and test_faithful_renderer.py)
    assert 0.0 <= summary["lip_sync"]["detection_rate"] <= 1.0

    # Frame by frame, the output is the ping-pong background with only the mouth region
    # changed: far from the face crop every pixel matches the source frame (up to H.264).
    source = list(read_frames(read_source(checkpoints["subject"]), fps=FPS))
    order = pingpong_indices(expected_frames, len(source))
    outside = np.ones((144, 176), bool)
    outside[20:130, 30:150] = False
    for k, frame in enumerate(read_frames(str(out))):
        if k % 11 == 0:
            diff = np.abs(frame.astype(int) - source[order[k]].astype(int))[outside]
            assert diff.mean() < 3.0, (k, diff.mean())


def read_source(subject: str) -> str:
    with open(os.path.join(subject, "subject.json")) as f:
        return json.load(f)["source"]["path"]


def test_background_frames_are_the_ping_pong_order_of_the_whole_decode(carphone_clip):
    whole = list(read_frames(carphone_clip, fps=FPS))
    t = len(whole)
    background = BackgroundFrames(carphone_clip, FPS, t, block=7)
    count = 2 * t + 37                                     # forward, backward, forward, back
    got = list(background(count))
    expected = pingpong_indices(count, t)
    assert [j for j, _ in got] == list(expected)
    for k, (j, frame) in enumerate(got):
        assert np.array_equal(frame, whole[j]), k


def test_monotonic_runs_rebuild_the_sequence():
    for t, n in [(5, 23), (1, 4), (2, 9), (100, 333)]:
        index = pingpong_indices(n, t)
        runs = monotonic_runs(index)
        rebuilt = np.concatenate([np.arange(a, b + 1) if b >= a else np.arange(a, b - 1, -1)
                                  for a, b in runs])
        assert np.array_equal(rebuilt, index)
        # maximal: consecutive runs never continue each other in the same direction
        assert all(not (b1 > a1 and a2 == b1 + 1 and b2 > a2)
                   for (a1, b1), (a2, b2) in zip(runs, runs[1:]))


@pytest.mark.parametrize("rate,offset_s", [(30, 0.0), (24, 0.0), (25, 0.0), (50, 0.0),
                                           (29.97, 0.0), (30, 1.3)])
def test_reads_from_a_start_frame_equal_the_whole_decode(tmp_path, rate, offset_s):
    """Sources at 24-50 fps (B-frames, a keyframe every 12) resampled to 25 fps; offset_s > 0
    makes the file's first timestamp 1.3 s (the no-seek path)."""
    from metatalk_jax.media.ffmpeg_tools import ffmpeg_exe
    path = str(tmp_path / "clip.mp4")
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size=64x48:rate={rate}:duration=6", "-output_ts_offset",
                    str(offset_s), "-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p", path],
                   check=True)
    assert abs(probe_video(path).start_s - offset_s) < 0.05
    whole = list(read_frames(path, fps=FPS))
    for start in (1, 13, 50, len(whole) - 3):
        part = list(read_frames(path, fps=FPS, start_frame=start, max_frames=6))
        assert len(part) == min(6, len(whole) - start)
        for offset, frame in enumerate(part):
            assert np.array_equal(frame, whole[start + offset]), (start, offset)


def test_composite_changes_only_pixels_under_the_warped_mouth_mask():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8)
    r = 64
    centre, side = np.array([1900.5, 1000.25]), 700.0
    from metatalk_jax.tracking.crop import crop_matrices
    matrix = crop_matrices(centre[None], np.array([side]), r)[0]
    mouth = np.zeros((r, r), np.uint8)
    mouth[36:54, 20:44] = 255
    alpha = blend_mask(mouth)
    face = rng.integers(0, 256, (r, r, 3), dtype=np.uint8)
    out = composite_frame(frame, face, matrix, alpha)
    # Independent footprint: frame pixels whose crop position (u = s (x + 0.5 - corner) - 0.5)
    # lies within 2 crop px of a pixel with alpha > 0.
    support = (alpha > 0).astype(np.uint8)
    near = cv2.dilate(support, np.ones((5, 5), np.uint8)) > 0
    ys, xs = np.nonzero(np.any(out != frame, axis=-1))
    assert len(ys) > 0
    scale = r / side
    corner = centre - side / 2
    u = np.round(scale * (xs + 0.5 - corner[0]) - 0.5).astype(int)
    v = np.round(scale * (ys + 0.5 - corner[1]) - 0.5).astype(int)
    inside = (u >= 0) & (u < r) & (v >= 0) & (v < r)
    assert inside.all()
    assert near[v, u].all()
    # and the blend really applies the face where alpha is 1
    full = np.argwhere(alpha > 0.999)
    y, x = full[len(full) // 2]
    fx = int((x + 0.5) / scale + corner[0])
    fy = int((y + 0.5) / scale + corner[1])
    assert np.abs(out[fy, fx].astype(int) - frame[fy, fx].astype(int)).max() > 0


def _no_output(path):
    folder = os.path.dirname(path)
    leftovers = os.listdir(folder) if os.path.isdir(folder) else []
    return not os.path.exists(path) and not any(n.startswith(".tmp-") for n in leftovers)


def test_each_bad_input_is_one_line_exit_2_and_no_output(checkpoints, tmp_path, capsys):
    ck = checkpoints
    good = _speech_like(tmp_path / "good.wav", 2.0)
    silent = write_wav(str(tmp_path / "silent.wav"), np.zeros(32000, np.float32), 16000)
    short = _speech_like(tmp_path / "short.wav", 0.2)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    newer = tmp_path / "newer_subject"
    import shutil
    shutil.copytree(ck["subject"], newer, ignore=shutil.ignore_patterns("tfds", "previews"))
    meta = json.loads((newer / "subject.json").read_text())
    meta["format_version"] = 99
    (newer / "subject.json").write_text(json.dumps(meta))
    wrong_e = random_a2e(str(tmp_path / "a2e_e7"), ck["subject"], 7)
    wrong_arch = str(tmp_path / "renderer_ngf")
    shutil.copytree(ck["renderer"], wrong_arch)
    config = json.loads(open(os.path.join(wrong_arch, "config.json")).read())
    config["model"]["ngf"] = 16
    open(os.path.join(wrong_arch, "config.json"), "w").write(json.dumps(config))
    small_frames = synthetic_video(str(tmp_path / "small.mp4"), 1.0, 48, 64)

    cases = {
        "missing subject": (["--subject", str(tmp_path / "nope")], "not a subject directory"),
        "newer subject": (["--subject", str(newer)], "newer than"),
        "missing audio": (["--audio", str(tmp_path / "none.wav")], "no such file"),
        "unreadable audio": (["--audio", str(garbage)], "garbage.wav"),
        "silent audio": (["--audio", silent], "silent"),
        "short audio": (["--audio", short], "at least"),
        "long audio": (["--max-seconds", "1"], "at most 1 s"),
        "renderer as a2e": (["--a2e", ck["renderer"]], "not 'a2e'"),
        "missing checkpoint": (["--renderer", str(tmp_path / "none")], "no such checkpoint"),
        "wrong resolution": (["--resolution", "256"], "trained at 32x32"),
        "wrong expression size": (["--a2e", wrong_e], "7 expression"),
        "wrong architecture": (["--renderer", wrong_arch], "not a usable renderer checkpoint"),
        "moved video": (["--video", str(tmp_path / "gone.mp4")], "missing"),
        "other video": (["--video", small_frames], "not the video"),
        "not mp4": (["--out", str(tmp_path / "o" / "x.gif")], "must be an .mp4"),
    }
    for name, (change, words) in cases.items():
        out = str(tmp_path / "o" / f"{name.replace(' ', '_')}.mp4")
        args = dict(zip(*[iter(_base_args(ck, good, out))] * 2))
        flags = dict(zip(*[iter(change)] * 2))
        args.update(flags)
        argv = [x for kv in args.items() for x in kv]
        code, stdout, stderr = _run(argv, capsys)
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert code == 2, (name, stderr[-500:])
        assert len(lines) == 1 and words in lines[0], (name, stderr[-500:])
        assert stdout == "" and _no_output(args["--out"]), name


def test_sigterm_mid_video_leaves_no_files(checkpoints, tmp_path):
    import signal
    import time
    audio = _speech_like(tmp_path / "long.wav", 30.0)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "metatalk_jax.infer"] + _base_args(
        checkpoints, audio, str(out_dir / "talk.mp4"))
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (
            out_dir.is_dir() and any(n.endswith(".mp4") for n in os.listdir(out_dir))):
        time.sleep(0.2)
    time.sleep(1.0)                     # frames are being encoded into the temporary file
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert os.listdir(out_dir) == []


@pytest.mark.slow
def test_peak_memory_on_a_4k_background_does_not_grow_with_length(checkpoints, tmp_path):
    """Two runs on a 4K background (6 s and 14 s of audio: both play the 4 s subject forward
    and backward); the peak RSS of the longer one is within 150 MB of the shorter's and under
    4 GiB."""
    video = synthetic_video(str(tmp_path / "bg4k.mp4"), 4.2, 2160, 3840)
    subject = scaled_subject(checkpoints["subject"], str(tmp_path / "s4k"), video, (2160, 3840))
    peaks = {}
    for seconds in (6, 14):
        audio = _speech_like(tmp_path / f"a{seconds}.wav", seconds)
        # The child's own peak (VmHWM): its ru_maxrss would start at the pytest process's
        # peak, which Linux carries into the child across fork (or vfork) and exec.
        code = ("import sys; from metatalk_jax import infer; "
                "rc = infer.main(sys.argv[1:]); "
                "print('PEAK_KB', [line.split()[1] for line in open('/proc/self/status') "
                "if line.startswith('VmHWM:')][0]); "
                "sys.exit(rc)")
        args = ["--subject", subject, "--a2e", checkpoints["a2e"], "--renderer",
                checkpoints["renderer"], "--audio", audio, "--out",
                str(tmp_path / f"o{seconds}.mp4"), "--preset", "ultrafast",
                "--lip-sync-frames", "0"]
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=REPO, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        peaks[seconds] = int(done.stdout.split("PEAK_KB")[1].split()[0]) * 1024
        assert count_frames(str(tmp_path / f"o{seconds}.mp4")) == seconds * 25
    print(f"peak RSS on 4K: 6 s {peaks[6] / 2 ** 30:.2f} GiB, 14 s {peaks[14] / 2 ** 30:.2f} GiB")
    assert peaks[14] - peaks[6] < 150 * 2 ** 20, peaks
    assert peaks[14] < 4 * 2 ** 30, peaks


def test_a_talker_compiles_once_and_draws_what_infer_writes(checkpoints, tmp_path):
    """Talker.load once, then two videos of different lengths: the second compiles nothing
    (JAX's compile events); frames() yields, unencoded, the frames the video holds."""
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    ck = checkpoints
    talker = Talker.load(subject=ck["subject"], a2e=ck["a2e"], renderer=ck["renderer"],
                         settings=InferenceSettings(lip_sync_frames=0, show_progress=False))
    first = talker.say(_speech_like(tmp_path / "a.wav", 1.3), str(tmp_path / "a.mp4"))
    compiled = talker.compiles()
    assert compiled > 0 and first["compiles_since_load"] == compiled
    second = talker.say(_speech_like(tmp_path / "b.wav", 2.1, level=0.2),
                        str(tmp_path / "b.mp4"))
    assert second["compiles_since_load"] == compiled            # nothing compiled again
    assert (first["frames"], second["frames"]) == (32, 52)
    drawn = list(talker.frames(str(tmp_path / "a.wav")))
    assert talker.compiles() == compiled and len(drawn) == 32
    # Text: espeak-ng's phoneme times travel into the drive sidecar (for the bilabials).
    said = talker.say("Bob made a map.", str(tmp_path / "text.mp4"))
    sidecar = json.loads(open(said["drive_sidecar"]).read())
    assert {"b", "m", "p"} <= {symbol for _, _, symbol in sidecar["phonemes"]}
    assert talker.compiles() == compiled
    drawn, written = np.stack(drawn).astype(int), np.stack(list(read_frames(str(tmp_path /
                                                                             "a.mp4"))))
    same = np.abs(drawn - written).mean()                       # H.264 (crf 18) noise only
    shifted = np.abs(drawn[6:] - written[:-6]).mean()           # the car moves in 6 frames
    assert same < 4.0 and same < 0.5 * shifted, (same, shifted)


def test_jobs_run_with_one_load_and_a_failing_job_does_not_stop_the_others(checkpoints,
                                                                           tmp_path, capsys):
    ck = checkpoints
    _speech_like(tmp_path / "one.wav", 1.2)
    write_wav(str(tmp_path / "silent.wav"), np.zeros(32000, np.float32), 16000)
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(j) for j in [
        {"audio": "one.wav", "out": "out/one.mp4"},
        {"audio": "silent.wav", "out": "out/silent.mp4"},
        {"text": "Bob made a map.", "out": "out/bob.mp4"},
        {"audio": "one.wav", "out": "out/not_a_video.gif"}]))
    code, stdout, stderr = _run(["--subject", ck["subject"], "--a2e", ck["a2e"],
                                 "--renderer", ck["renderer"], "--jobs",
                                 tmp_path / "jobs.jsonl", "--lip-sync-frames", "0"], capsys)
    assert code == 2, stderr[-2000:]                    # two jobs failed
    results = [json.loads(line) for line in stdout.strip().splitlines()]
    assert [r["ok"] for r in results] == [True, False, True, False]
    assert "silent" in results[1]["error"] and "must be an .mp4" in results[3]["error"]
    assert sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".mp4")) == [
        "bob.mp4", "one.mp4"]
    assert results[2]["frames"] > 20 and results[2]["compiles_since_load"] == \
        results[0]["compiles_since_load"]
    assert "job 4/4" in stderr and "4/4 jobs done (2 written, 2 failed)" in stderr


def test_an_unwritable_out_is_refused_before_anything_is_loaded(tmp_path, capsys):
    """The subject, checkpoints and audio do not even exist: the --out error comes first."""
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "a_file").write_text("x")
    nothing = ["--subject", str(tmp_path / "none"), "--a2e", str(tmp_path / "none"),
               "--renderer", str(tmp_path / "none"), "--audio", str(tmp_path / "none.wav")]
    for out, words in ((tmp_path / "folder.mp4", "is a directory"),
                       (tmp_path / "a_file" / "x.mp4", "is a file, not a folder"),
                       ("gs://bucket/x.mp4", "writes local files")):
        code, stdout, stderr = _run(nothing + ["--out", out], capsys)
        lines = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and words in lines[0], stderr


@pytest.fixture(scope="module")
def reference_renderer(checkpoints):
    """A renderer that reads mouth references (so the bundle carries references.npz)."""
    return random_renderer(str(checkpoints["root"] / "renderer_ref"), checkpoints["subject"],
                           resolution=32, overrides=["data.mouth_reference=True"])


def test_a_bundle_says_exactly_what_the_work_dirs_say(checkpoints, reference_renderer,
                                                      tmp_path, capsys):
    """export -> infer --talker: the same frames, bit for bit, as infer from the subject and
    the work dirs; the bundle's checkpoints hold the inference weights only."""
    import orbax.checkpoint as ocp

    from metatalk_jax import export
    ck = checkpoints
    bundle = tmp_path / "me.talker"
    code = export.main(["--subject", ck["subject"], "--a2e", ck["a2e"], "--renderer",
                        reference_renderer, "--out", str(bundle)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["files"] > 8
    assert (bundle / "subject" / "references.npz").is_file()
    from metatalk_jax.inference.trained_models import locate_checkpoint
    for task, want in (("a2e", {"params"}), ("renderer", {"g_params", "g_stats"})):
        step_dir = locate_checkpoint(str(bundle / task), task).step_dir
        meta = ocp.PyTreeCheckpointer().metadata(os.path.join(step_dir, "state")).item_metadata
        assert set(getattr(meta, "tree", meta)) == want           # no optimiser, no critic
    audio = _speech_like(tmp_path / "speech.wav", 1.5)
    outs = {}
    for name, flags in (("workdirs", ["--subject", ck["subject"], "--a2e", ck["a2e"],
                                      "--renderer", reference_renderer]),
                        ("bundle", ["--talker", str(bundle)])):
        outs[name] = tmp_path / f"{name}.mp4"
        code, stdout, stderr = _run(flags + ["--audio", audio, "--out", outs[name],
                                             "--lip-sync-frames", "0"], capsys)
        assert code == 0, stderr[-2000:]
    a, b = (np.stack(list(read_frames(str(outs[k])))) for k in ("workdirs", "bundle"))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_a_damaged_bundle_is_refused_in_one_line(checkpoints, tmp_path, capsys):
    import shutil
    from metatalk_jax.inference.talker_bundle import BundleError, export_talker, open_bundle
    ck = checkpoints
    good = tmp_path / "good.talker"
    export_talker(ck["subject"], ck["a2e"], ck["renderer"], str(good))
    open_bundle(str(good))
    with pytest.raises(BundleError, match="exists"):
        export_talker(ck["subject"], ck["a2e"], ck["renderer"], str(good))

    def damaged(name, change):
        copy = tmp_path / name
        shutil.copytree(good, copy)
        change(copy)
        with pytest.raises(BundleError) as err:
            open_bundle(str(copy))
        assert "\n" not in str(err.value)
        return str(err.value)

    def flip(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    assert "checksum" in damaged("flipped", lambda d: flip(d / "subject" / "coefficients.npz"))
    assert "truncated" in damaged("cut", lambda d: (d / "face_model.npz").write_bytes(
        (d / "face_model.npz").read_bytes()[:1000]))
    assert "missing" in damaged("missing", lambda d: (d / "subject" / "crops.npz").unlink())
    assert "not in the manifest" in damaged("extra", lambda d: (d / "a2e" / "x").write_text("x"))
    assert "not a talker bundle" in damaged("no_manifest",
                                            lambda d: (d / "manifest.json").unlink())
    code, _, stderr = _run(["--talker", str(tmp_path / "flipped"), "--audio", "x.wav",
                            "--out", str(tmp_path / "x.mp4")], capsys)
    assert code == 2 and "checksum" in stderr


def test_a_bundle_in_a_bucket(checkpoints, tmp_path):
    """Exported to gs:// (the storage emulator on loopback), loaded from it: the same frames
    as the local bundle."""
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    from metatalk_jax.inference.talker_bundle import export_talker
    from tests.support.gcs_emulator import running_emulator
    ck = checkpoints
    data = tmp_path / "gcs" / "data"
    data.mkdir(parents=True)
    audio = _speech_like(tmp_path / "speech.wav", 1.0)
    settings = InferenceSettings(lip_sync_frames=0, show_progress=False)
    local = tmp_path / "local.talker"
    export_talker(ck["subject"], ck["a2e"], ck["renderer"], str(local))
    want = np.stack(list(Talker.load(str(local), settings=settings).frames(audio)))
    with running_emulator(str(data)) as bucket:
        url = f"{bucket}/talkers/me.talker"
        export_talker(ck["subject"], ck["a2e"], ck["renderer"], url)
        talker = Talker.load(url, settings=settings)
        assert not talker.video.startswith("gs://")          # staged into the local cache
        got = np.stack(list(talker.frames(audio)))
    assert np.array_equal(got, want)


def test_a_live_stream_draws_the_offline_frames(checkpoints, tmp_path):
    """Speech, a 1.2 s pause, speech again, fed in uneven chunks: with the whole clip's
    calibration the streamed frames are the offline frames, bit for bit; with the live one
    (measured on the first 2 s) they come out all the same, one per frame of audio."""
    from metatalk_jax.inference.live_stream import DriveCalibration
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    ck = checkpoints
    rate = 16000
    t = np.arange(int(1.6 * rate)) / rate
    word = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    audio = np.concatenate([word, np.zeros(int(1.2 * rate)), 0.5 * word]).astype(np.float32)
    talker = Talker.load(subject=ck["subject"], a2e=ck["a2e"], renderer=ck["renderer"],
                         settings=InferenceSettings(lip_sync_frames=0, show_progress=False))
    offline = np.stack(list(talker.frames(audio)))
    sizes = np.resize([1234, 640, 4000, 77, 2500], 200)
    chunks = np.split(audio, np.cumsum(sizes)[np.cumsum(sizes) < len(audio)])
    calibration = DriveCalibration.of(audio, rate, 25.0)
    streamed = np.stack(list(talker.stream(iter(chunks), calibration=calibration)))
    assert streamed.shape == offline.shape == (110, 144, 176, 3)
    assert np.array_equal(streamed, offline)
    live = list(talker.stream(iter(chunks)))
    assert len(live) == len(offline)
