"""Metric writers: event files read back by TensorBoard's own reader, JSON lines, previews.

Independent expectations: RFC 3720 crc32c test vectors, TensorBoard's record reader (which checks
both CRCs of every record with its own crc32c), TensorBoard's EventAccumulator and its Event
protobuf classes, OpenCV's PNG decoder, and the values we wrote.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import socket
import stat
import time

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub import errors as tb_errors
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_records

from metatalk_jax.train.metric_writers import MetricWriter, preview_file_name
from metatalk_jax.train.tb_events import EventFileWriter, crc32c, masked_crc32c


def read_events(path: str) -> list[event_pb2.Event]:
    """All Events of one file through TensorBoard's reader (raises DataLossError on a bad CRC)."""
    reader = tb_records.PyRecordReader_New(path)
    events = []
    while True:
        try:
            reader.GetNext()
        except tb_errors.OutOfRangeError:
            return events
        events.append(event_pb2.Event.FromString(reader.record()))


def accumulate(logdir: str) -> EventAccumulator:
    accumulator = EventAccumulator(logdir, size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def decode_png(encoded: bytes) -> np.ndarray:
    """PNG bytes -> RGB [H,W,3] or grey [H,W] uint8."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    return image[:, :, ::-1] if image.ndim == 3 else image


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def strict_json(line: str) -> dict:
    """json.loads that rejects the non-standard NaN/Infinity literals."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(line, parse_constant=reject)


# ---------------------------------------------------------------------------------------------
# crc32c and framing
# ---------------------------------------------------------------------------------------------

def test_crc32c_matches_rfc3720_vectors():
    # RFC 3720 appendix B.4 plus the common "123456789" check value of CRC-32C.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"") == 0


def test_masked_crc_matches_tensorboard():
    data = random_image((1000,), seed=3).tobytes()
    assert masked_crc32c(data) == tb_records.masked_crc32c(data)


def test_first_record_is_file_version_and_name_follows_convention(tmp_path):
    before = int(time.time())
    writer = EventFileWriter(tmp_path)
    writer.close()
    after = int(time.time())
    [path] = glob.glob(str(tmp_path / "*"))
    match = re.fullmatch(r"events\.out\.tfevents\.(\d+)\.(.+)", os.path.basename(path))
    assert match and before <= int(match.group(1)) <= after
    assert match.group(2) == socket.gethostname()
    [event] = read_events(path)
    assert event.file_version == "brain.Event:2"
    assert before <= event.wall_time <= after + 1


def test_corrupted_record_is_rejected_by_tensorboard(tmp_path):
    """TensorBoard's reader really checks our CRCs: one flipped payload byte fails it."""
    with EventFileWriter(tmp_path) as writer:
        writer.scalar("loss", 0.5, step=1)
        path = writer.path
    assert len(read_events(path)) == 2
    data = bytearray(open(path, "rb").read())
    data[-6] ^= 0x01  # inside the last record's payload (the final 4 bytes are its CRC)
    open(path, "wb").write(bytes(data))
    with pytest.raises(tb_errors.DataLossError):
        read_events(path)


# ---------------------------------------------------------------------------------------------
# EventFileWriter round trips
# ---------------------------------------------------------------------------------------------

def test_scalars_round_trip_through_event_accumulator(tmp_path):
    written = {"loss/l1": [(0, 1.5), (10, 0.25), (20, 1e-3)],
               "lr": [(0, 2e-4), (10, 1e-4)]}
    with EventFileWriter(tmp_path) as writer:
        for tag, series in written.items():
            for step, value in series:
                writer.scalar(tag, value, step)
        writer.scalars({"d/real": -3.5, "d/fake": 7.0}, step=30)
    accumulator = accumulate(str(tmp_path))
    assert sorted(accumulator.Tags()["scalars"]) == ["d/fake", "d/real", "loss/l1", "lr"]
    for tag, series in written.items():
        got = [(event.step, event.value) for event in accumulator.Scalars(tag)]
        # simple_value is a float32, so the stored value is the float32 rounding of ours.
        assert got == [(step, float(np.float32(value))) for step, value in series]
    assert [(e.step, e.value) for e in accumulator.Scalars("d/real")] == [(30, -3.5)]


def test_large_step_negative_step_and_non_finite_values(tmp_path):
    with EventFileWriter(tmp_path) as writer:
        writer.scalar("x", float("nan"), step=2**40 + 3)
        writer.scalar("x", float("inf"), step=-5)
        writer.scalar("x", 1e39, step=7)  # beyond float32: +inf
        path = writer.path
    events = read_events(path)[1:]
    assert [event.step for event in events] == [2**40 + 3, -5, 7]
    values = [event.summary.value[0].simple_value for event in events]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == math.inf


def test_images_round_trip_exactly(tmp_path):
    rgb = random_image((24, 40, 3), seed=1)
    grey = random_image((17, 9), seed=2)
    with EventFileWriter(tmp_path) as writer:
        writer.image("preview/rgb", rgb, step=3)
        writer.image("preview/grey", grey, step=4)
        path = writer.path
    accumulator = accumulate(str(tmp_path))
    [rgb_event] = accumulator.Images("preview/rgb")
    [grey_event] = accumulator.Images("preview/grey")
    assert (rgb_event.step, rgb_event.height, rgb_event.width) == (3, 24, 40)
    assert (grey_event.step, grey_event.height, grey_event.width) == (4, 17, 9)
    np.testing.assert_array_equal(decode_png(rgb_event.encoded_image_string), rgb)
    np.testing.assert_array_equal(decode_png(grey_event.encoded_image_string), grey)
    colorspaces = [event.summary.value[0].image.colorspace for event in read_events(path)[1:]]
    assert colorspaces == [3, 1]


def test_image_rejects_non_uint8(tmp_path):
    with EventFileWriter(tmp_path) as writer, pytest.raises(ValueError, match="uint8"):
        writer.image("x", np.zeros((4, 4, 3), np.float32), step=0)


# ---------------------------------------------------------------------------------------------
# MetricWriter
# ---------------------------------------------------------------------------------------------

def read_jsonl(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [strict_json(line) for line in f]


def test_jsonl_records_and_value_types(tmp_path):
    start = time.time()
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": 0.5, "count": np.int64(3), "f32": np.float32(0.25),
                                 "jax": jnp.float32(2.5), "jax_int": jnp.int32(-4)})
        writer.write_scalars(np.int32(2), {"loss": float("nan"), "up": np.inf, "down": -np.inf})
    end = time.time()
    records = read_jsonl(tmp_path)
    assert len(records) == 2
    assert start <= records[0]["time"] <= records[1]["time"] <= end
    for record in records:
        del record["time"]
    assert records[0] == {"step": 1, "loss": 0.5, "count": 3, "f32": 0.25, "jax": 2.5,
                          "jax_int": -4}
    assert type(records[0]["count"]) is int and type(records[0]["jax_int"]) is int
    assert records[1] == {"step": 2, "loss": "nan", "up": "inf", "down": "-inf"}
    # The same values reached TensorBoard (non-finite ones as IEEE specials).
    accumulator = accumulate(str(tmp_path / "tensorboard"))
    assert [(e.step, e.value) for e in accumulator.Scalars("jax")] == [(1, 2.5)]
    assert [(e.step, e.value) for e in accumulator.Scalars("count")] == [(1, 3.0)]
    assert [(e.step, e.value) for e in accumulator.Scalars("down")] == [(2, -math.inf)]
    assert math.isnan(accumulator.Scalars("loss")[1].value)


def test_each_write_is_flushed_before_close(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write_scalars(5, {"loss": 1.0})
    # Not closed: a run killed now must still have the line and the event on disk.
    assert [r["step"] for r in read_jsonl(tmp_path)] == [5]
    assert [e.step for e in accumulate(str(tmp_path / "tensorboard")).Scalars("loss")] == [5]
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write_scalars(6, {"loss": 1.0})


def test_resumed_run_appends_to_the_same_files(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": 3.0})
        writer.write_scalars(2, {"loss": 2.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a kill in the middle of a line
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(3, {"loss": 1.0})
    lines = open(tmp_path / "metrics.jsonl").read().splitlines()
    assert len(lines) == 4 and lines[2] == '{"step": 3, "lo'
    steps = [strict_json(line)["step"] for i, line in enumerate(lines) if i != 2]
    assert steps == [1, 2, 3]
    assert len(glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))) == 2
    accumulator = accumulate(str(tmp_path / "tensorboard"))
    assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [(1, 3.0), (2, 2.0),
                                                                       (3, 1.0)]


def test_write_images_saves_previews_and_tensorboard_images(tmp_path):
    render = random_image((32, 48, 3), seed=4)
    mask = random_image((32, 48), seed=5)
    with MetricWriter(tmp_path) as writer:
        writer.write_images(120, {"train/render": render, "mask": mask})
    previews = sorted(os.listdir(tmp_path / "previews"))
    assert previews == ["mask_0000120.png", "train_render_0000120.png"]  # no temp files left
    np.testing.assert_array_equal(decode_png(open(tmp_path / "previews" / previews[1], "rb")
                                             .read()), render)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "previews" / previews[0]),
                                             cv2.IMREAD_UNCHANGED), mask)
    mode = stat.S_IMODE(os.stat(tmp_path / "previews" / previews[0]).st_mode)
    assert mode & stat.S_IRGRP  # published with ordinary permissions, not mkstemp's 0600
    accumulator = accumulate(str(tmp_path / "tensorboard"))
    [event] = accumulator.Images("train/render")
    assert event.step == 120
    np.testing.assert_array_equal(decode_png(event.encoded_image_string), render)


def test_disabled_writer_creates_nothing(tmp_path):
    workdir = tmp_path / "run"
    writer = MetricWriter(workdir, enabled=False)
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_images(1, {"render": random_image((8, 8, 3))})
    writer.flush()
    writer.close()
    assert not workdir.exists() and os.listdir(tmp_path) == []


def test_reserved_names_are_refused(tmp_path):
    with MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="reserved"):
        writer.write_scalars(1, {"step": 2.0})


def test_preview_names():
    # Bucket work dirs (metrics, events and previews in gs://...): tests/test_gcs_workdir.py.
    assert preview_file_name("train/render", 5) == "train_render_0000005.png"
    assert preview_file_name("a b:c", 1234567) == "a_b_c_1234567.png"
