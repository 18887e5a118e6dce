"""The built-in demo at its tiny setting: files, frame count, and the mouth really opens."""

import cv2
import numpy as np

from metatalk_jax import demo
from metatalk_jax.config_loading import load_config


def test_demo_writes_png_and_mp4_with_all_frames(tmp_path):
    config = load_config(demo.DEFAULT_CONFIG + ":tiny")
    result = demo.run_demo(config, str(tmp_path))
    png = cv2.imread(result["png"])
    assert png.shape == (config.size, 2 * config.size, 3)
    cap = cv2.VideoCapture(result["mp4"])
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    assert ok and frame.shape[:2] == (config.size, config.size) and count == config.frames
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png", "turntable.mp4"]  # no temp files


def test_mouth_open_expression_opens_the_lips_by_the_target():
    model = demo.load_demo_model("procedural")
    opening = demo.mouth_open_expression(model)
    lm = np.asarray(model.landmark_ids)
    shape = np.asarray(model.mean_shape) + np.einsum("vck,k->vc", np.asarray(model.exp_basis), np.asarray(opening))
    mean = np.asarray(model.mean_shape)
    gap = (shape[lm[62], 1] - shape[lm[66], 1]) - (mean[lm[62], 1] - mean[lm[66], 1])
    assert abs(gap - 0.08 * (mean[lm[27], 1] - mean[lm[8], 1])) < 1e-4


def test_config_overrides_and_bad_keys(tmp_path):
    config = load_config(demo.DEFAULT_CONFIG, ["size=64", "model=procedural"])
    assert config.size == 64 and config.model == "procedural"
    try:
        load_config(demo.DEFAULT_CONFIG, ["no_such_key=1"])
    except ValueError as err:
        assert "no_such_key" in str(err)
    else:
        raise AssertionError("unknown key accepted")
    assert demo.main(["--config", str(tmp_path / "missing.py"), "--out", str(tmp_path)]) == 2
