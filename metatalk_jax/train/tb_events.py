"""TensorBoard event files written without TensorFlow.

An event file is a sequence of TFRecord records, each holding one serialized `tensorboard.Event`
protobuf. Only the few messages and fields we need are encoded here, by hand:

    Event   {wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
             summary = 5 (Summary)}
    Summary {value = 1 (repeated Value)}
    Value   {tag = 1 (string), simple_value = 2 (float), image = 4 (Image)}
    Image   {height = 1 (int32), width = 2 (int32), colorspace = 3 (int32),
             encoded_image_string = 4 (bytes)}

(field numbers as in tensorboard/compat/proto/event.proto and summary.proto).

TFRecord framing of one record:
    uint64 little-endian length | uint32 masked crc32c(length bytes) | data | uint32 masked
    crc32c(data), where masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2^32) and crc32c
    is the Castagnoli CRC (reflected polynomial 0x82F63B78).

The first record of every file is an Event carrying only file_version "brain.Event:2".
"""

from __future__ import annotations

import os
import socket
import struct
import time

import cv2
import numpy as np

FILE_VERSION = "brain.Event:2"

# Summary.Image.colorspace values TensorBoard understands (1 grey, 3 RGB, 4 RGBA).
COLORSPACE_BY_CHANNELS = {1: 1, 3: 3, 4: 4}


# ---------------------------------------------------------------------------------------------
# crc32c (Castagnoli)
# ---------------------------------------------------------------------------------------------

def _crc32c_table() -> tuple[int, ...]:
    """The 256 byte-at-a-time remainders of the reflected Castagnoli polynomial."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """Castagnoli CRC-32 of `data` (crc32c(b"123456789") == 0xE3069283).

    Pure Python, about 0.1 s per MB: it runs once per record, and records are small scalars or
    one PNG preview.
    """
    table = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: crc32c rotated right by 15 bits plus a constant, so that a CRC
    stored inside CRC-protected data does not checksum to a trivial value."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(data: bytes) -> bytes:
    """One TFRecord: length, its checksum, the payload, the payload's checksum."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ---------------------------------------------------------------------------------------------
# protobuf wire format (only the wire types used by Event / Summary)
# ---------------------------------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    """Base-128 varint; negative int64 values are sent as their 64-bit two's complement."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _int_field(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(int(value))


def _double_field(field: int, value: float) -> bytes:
    return _key(field, _FIXED64) + struct.pack("<d", float(value))


def _float_field(field: int, value: float) -> bytes:
    return _key(field, _FIXED32) + struct.pack("<f", float(value))


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _string_field(field: int, text: str) -> bytes:
    return _bytes_field(field, text.encode("utf-8"))


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 summary_values: list[bytes] | None = None) -> bytes:
    """Serializes an Event; `summary_values` are already encoded Summary.Value messages."""
    out = _double_field(1, wall_time) + _int_field(2, step)
    if file_version is not None:
        out += _string_field(3, file_version)
    if summary_values:
        out += _bytes_field(5, b"".join(_bytes_field(1, value) for value in summary_values))
    return out


def encode_scalar_value(tag: str, value: float) -> bytes:
    """Summary.Value with simple_value (a float32: larger magnitudes become +-inf)."""
    with np.errstate(over="ignore"):
        single = float(np.float32(value))
    return _string_field(1, tag) + _float_field(2, single)


def encode_image_value(tag: str, png: bytes, height: int, width: int, channels: int) -> bytes:
    """Summary.Value with an Image holding already-encoded PNG bytes."""
    image = (_int_field(1, height) + _int_field(2, width)
             + _int_field(3, COLORSPACE_BY_CHANNELS[channels]) + _bytes_field(4, png))
    return _string_field(1, tag) + _bytes_field(4, image)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------

def encode_png(image) -> tuple[bytes, int, int, int]:
    """PNG bytes of a uint8 image [H,W], [H,W,1], [H,W,3] (RGB) or [H,W,4] (RGBA).

    Returns (png, height, width, channels). OpenCV stores BGR(A), hence the channel swap.
    """
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in COLORSPACE_BY_CHANNELS:
        raise ValueError(f"image must be [H,W], [H,W,1], [H,W,3] or [H,W,4], got {pixels.shape}")
    height, width, channels = pixels.shape
    if channels == 3:
        pixels = pixels[:, :, ::-1]
    elif channels == 4:
        pixels = pixels[:, :, [2, 1, 0, 3]]
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as PNG")
    return buffer.tobytes(), height, width, channels


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------

def event_file_name(wall_time: float) -> str:
    """`events.out.tfevents.<int wall time>.<hostname>` (TensorBoard finds files by 'tfevents')."""
    return f"events.out.tfevents.{int(wall_time)}.{socket.gethostname()}"


class EventFileWriter:
    """Appends scalar and image summaries to a new event file in `logdir`.

        writer = EventFileWriter("work/tensorboard")
        writer.scalar("loss/l1", 0.25, step=100)
        writer.image("preview", rgb_uint8, step=100)   # [H,W,3] or [H,W]
        writer.close()

    Records are buffered by the file object; `flush()` hands them to the OS (or, for a URL
    logdir such as gs://bucket/run/tensorboard, uploads the file whole). Each writer makes
    its own file (TensorBoard merges all files of a folder), so a resumed run never rewrites an
    earlier run's file; if the name is taken (two writers in the same second) a pid/counter
    suffix keeps them apart.
    """

    def __init__(self, logdir):
        from metatalk_jax.train import workdir
        self.logdir = os.fspath(logdir)
        workdir.makedirs(self.logdir)
        now = time.time()
        path = workdir.join(self.logdir, event_file_name(now))
        counter = 0
        while workdir.exists(path):
            counter += 1
            path = workdir.join(self.logdir, f"{event_file_name(now)}.{os.getpid()}.{counter}")
        self.path = path
        # A URL logdir (gs://...): the file is staged locally and uploaded whole on flush.
        self._file = (workdir.StagedFile(path, resume=False) if workdir.is_url(path)
                      else open(path, "xb"))
        self._write_event(encode_event(now, 0, file_version=FILE_VERSION))
        self.flush()

    def _write_event(self, event: bytes) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._file.write(tfrecord_frame(event))

    def scalars(self, values: dict, step: int) -> None:
        """Several scalars at one step, in one Event. Values are anything float() accepts."""
        encoded = [encode_scalar_value(tag, float(value)) for tag, value in values.items()]
        self._write_event(encode_event(time.time(), int(step), summary_values=encoded))

    def scalar(self, tag: str, value, step: int) -> None:
        """One scalar (stored as float32, TensorBoard's simple_value)."""
        self.scalars({tag: value}, step)

    def encoded_image(self, tag: str, png: bytes, height: int, width: int, channels: int,
                      step: int) -> None:
        """An image already encoded by `encode_png` (so callers can reuse the bytes)."""
        value = encode_image_value(tag, png, height, width, channels)
        self._write_event(encode_event(time.time(), int(step), summary_values=[value]))

    def image(self, tag: str, image, step: int) -> None:
        """A uint8 image [H,W] (grey) or [H,W,3] (RGB), PNG-encoded."""
        self.encoded_image(tag, *encode_png(image), step=step)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EventFileWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
