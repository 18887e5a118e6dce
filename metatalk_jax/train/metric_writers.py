"""Training metrics: a JSON-lines file, TensorBoard event files and PNG previews in the work dir.

    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    writer.write_scalars(step, {"loss/l1": l1, "learning_rate": lr})
    writer.write_images(step, {"render": rgb_uint8})      # [H,W,3] or [H,W]
    writer.close()

Layout under `workdir`:
    metrics.jsonl                         one JSON object per write_scalars call:
                                          {"step": int, "time": unix seconds, "<tag>": value, ...}
    tensorboard/events.out.tfevents.*     scalars and images (see tb_events)
    previews/<tag>_<step:07d>.png         each image, written atomically

`workdir` may be a URL (gs://bucket/run): everything then goes to the bucket; the JSON lines
and event file are staged locally and uploaded whole on each flush (train/workdir.StagedFile).
The JSON lines are flushed on every call, so a killed run keeps everything it logged, and the
file is appended to, so a resumed run continues it (steps between the last checkpoint and the
kill then appear twice; readers should keep the last line of a step). Values that are not finite
are written as the strings "nan", "inf" and "-inf": JSON has no such numbers and Python's
json module would otherwise emit bare NaN, which strict parsers reject.

Only process 0 of a multi-host run should log: `enabled=False` turns every call into a no-op
and creates no files.
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import numpy as np

from metatalk_jax.train import workdir as workdir_lib
from metatalk_jax.train.tb_events import EventFileWriter, encode_png

RESERVED_KEYS = ("step", "time")


def json_number(value):
    """A host scalar (python, numpy or a fully replicated jax scalar) as a JSON-safe value.

    Integers and booleans stay exact, other numbers become float; nan/inf become strings.
    """
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric values must be scalars, got shape {array.shape}")
    item = array.reshape(()).item()
    if isinstance(item, (bool, int)):
        return item
    number = float(item)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def preview_file_name(tag: str, step: int) -> str:
    """`<tag>_<step:07d>.png`, with characters that are unsafe in file names (such as the '/'
    of 'train/render') replaced by '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", tag).strip("._") or "image"
    return f"{safe}_{int(step):07d}.png"


def ends_without_newline(path: str) -> bool:
    """True when `path` exists, is not empty and its last byte is not a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


class MetricWriter:
    """JSON lines + TensorBoard + PNG previews for one run (see the module docstring)."""

    def __init__(self, workdir, *, enabled: bool = True):
        self.enabled = enabled
        self.workdir = self.logdir = workdir_lib.resolve(workdir)
        self._jsonl = None
        self._events = None
        if not enabled:
            return
        workdir_lib.makedirs(self.logdir)
        self.jsonl_path = workdir_lib.join(self.logdir, "metrics.jsonl")
        self.tensorboard_dir = workdir_lib.join(self.logdir, "tensorboard")
        self.previews_dir = workdir_lib.join(self.logdir, "previews")
        if workdir_lib.is_url(self.logdir):
            # A bucket object cannot be appended to: staged locally, uploaded whole on flush.
            self._jsonl = workdir_lib.StagedFile(self.jsonl_path, resume=True)
            starts_mid_line = self._jsonl.tell() > 0 and ends_without_newline(self._jsonl.local)
        else:
            starts_mid_line = ends_without_newline(self.jsonl_path)
            self._jsonl = open(self.jsonl_path, "ab")
        if starts_mid_line:
            # A run killed in the middle of a write can leave an unterminated last line; the
            # resumed run's records start on a fresh line so each line stays one JSON object.
            self._jsonl.write(b"\n")
            self._jsonl.flush()
        self._events = EventFileWriter(self.tensorboard_dir)

    def _check_open(self) -> None:
        if self._jsonl is None:
            raise ValueError(f"MetricWriter for {self.logdir} is closed")

    def write_scalars(self, step: int, scalars: dict) -> None:
        """One JSON line {"step", "time", **scalars} and one TensorBoard event at `step`."""
        if not self.enabled:
            return
        clashing = [key for key in RESERVED_KEYS if key in scalars]
        if clashing:
            raise ValueError(f"metric names {clashing} are reserved for the record itself")
        self._check_open()
        values = {tag: json_number(value) for tag, value in scalars.items()}
        record = {"step": int(step), "time": time.time(), **values}
        self._jsonl.write((json.dumps(record, allow_nan=False) + "\n").encode())
        self._jsonl.flush()
        self._events.scalars({tag: float(value) for tag, value in values.items()}, int(step))
        self._events.flush()

    def write_images(self, step: int, images: dict) -> None:
        """Each uint8 image ([H,W] grey or [H,W,3] RGB) to TensorBoard and previews/ as PNG."""
        if not self.enabled:
            return
        self._check_open()
        for tag, image in images.items():
            png, height, width, channels = encode_png(image)
            self._events.encoded_image(tag, png, height, width, channels, int(step))
            workdir_lib.write_bytes(
                workdir_lib.join(self.previews_dir, preview_file_name(tag, step)), png)
        self._events.flush()

    def flush(self) -> None:
        if self._jsonl is not None:
            self._jsonl.flush()
            self._events.flush()

    def close(self) -> None:
        """Closes the files; later writes raise. Safe to call twice."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
