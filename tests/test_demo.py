"""The built-in demo at its tiny setting (configs/demo.py:tiny) on the shared prepared carphone
subject: every stage runs through its CLI and the talking-face video comes out with its audio."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from metatalk_jax import demo
from metatalk_jax.config_loading import load_config
from metatalk_jax.media.video_read import count_frames, probe_video


def test_tiny_demo_makes_a_talking_video_with_audio_and_previews(carphone_subject, tmp_path):
    config = load_config("demo:tiny")
    lines = []
    summary = demo.run_demo(config, str(tmp_path / "out"), log=lines.append,
                            prepared_subject=str(carphone_subject[0]))
    text = "\n".join(lines)
    for stage in ("python -m metatalk_jax.pseudo --teacher visemes",
                  "python -m metatalk_jax.train --config", "python -m metatalk_jax.infer"):
        assert stage in text, text
    speech_seconds = probe_video(summary["video"]).duration_s
    info = probe_video(summary["video"])
    assert info.has_audio and (info.height, info.width) == (144, 176)
    # One frame per 40 ms of the synthesised sentence (floor), the audio muxed alongside.
    import wave
    with wave.open(summary["speech"]) as w:
        seconds = w.getnframes() / w.getframerate()
    assert count_frames(summary["video"]) == math.floor(seconds * 25)
    assert abs(speech_seconds - seconds) < 0.1
    assert count_frames(summary["preview"]) == math.floor(seconds * 25)
    assert os.path.isfile(summary["drive_sidecar"])
    import cv2
    sheet = cv2.imread(summary["preview_png"])
    assert sheet is not None and sheet.shape[0] >= 4 * 192
    # the headline lip sync is measured on the output pixels (4 training steps draw noise at
    # the mouth, so dlib rarely finds a face: the measure itself is tested elsewhere); the
    # A2E's figure on the 3DMM stays, labelled as such
    pixels = summary["lip_sync"]
    assert pixels["measured_on"].startswith("output pixels")
    assert pixels["frames"] == math.floor(seconds * 25)
    check = summary["a2e_3dmm_lip_sync"]
    assert check["frames"] == math.floor(seconds * 25) and "3DMM" in check["measured_on"]
    assert all(np.isfinite(v) for v in check.values() if not isinstance(v, str))
    written = json.loads(open(os.path.join(tmp_path, "out", "demo_summary.json")).read())
    assert written["video"] == summary["video"]
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".tmp-")]


def test_config_overrides_and_bad_keys(tmp_path):
    config = load_config(demo.DEFAULT_CONFIG, ["renderer.total_steps=5", "sentence=Hi there."])
    assert config.renderer.total_steps == 5 and config.sentence == "Hi there."
    # the demo's stages are the stages' own configs (the cpu variants) with few changes
    assert config.renderer.data.conditioning == "mouth_cavity"
    assert config.a2e.task == "a2e" and config.a2e.data.pseudo_ratio == 1.0
    try:
        load_config(demo.DEFAULT_CONFIG, ["no_such_key=1"])
    except ValueError as err:
        assert "no_such_key" in str(err)
    else:
        raise AssertionError("unknown key accepted")
    assert demo.main(["--config", str(tmp_path / "missing.py"), "--out", str(tmp_path)]) == 2
