"""target_video TFDS/ArrayRecord writer and reader, on a synthetic 20-frame subject.

Plus the streaming writer on bigger synthetic inputs: bounded memory, several shards per split.
"""

import json
import os
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from metatalk_jax.data_pipelines.subject_frames import (decode_example, open_target_source,
                                                        split_sizes, target_video_dir,
                                                        write_target_video_shards)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES, CROP, EXPR, AUDIO = 20, 64, 8, 640
NUM_TRAIN, NUM_VAL = 18, 2  # by time: validation = last ceil(20 * 0.1) = 2 frames
VECTORS = {"expression": (EXPR,), "gamma": (27,), "angles": (3,), "translation": (3,),
           "crop_transform": (2, 3), "audio": (AUDIO,)}


def make_frames(seed=0):
    """The synthetic subject: list of frame dicts plus the pixels behind the encoded images."""
    rng = np.random.default_rng(seed)
    frames, pixels = [], []
    for i in range(NUM_FRAMES):
        rgb = rng.integers(0, 256, (CROP, CROP, 3), dtype=np.uint8)
        face = np.where(rng.random((CROP, CROP)) < 0.5, 255, 0).astype(np.uint8)
        mouth = np.where(rng.random((CROP, CROP)) < 0.2, 255, 0).astype(np.uint8)
        frame = {
            "frame_index": np.int64(i),
            "time_s": np.float32(i / 25.0),
            # PNG files hold RGB; OpenCV encodes from BGR, hence the conversion.
            "face_crop": cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes(),
            "face_mask": cv2.imencode(".png", face)[1].tobytes(),
            "mouth_mask": cv2.imencode(".png", mouth)[1].tobytes(),
        }
        for key, shape in VECTORS.items():
            frame[key] = rng.standard_normal(shape).astype(np.float32)
        frames.append(frame)
        pixels.append({"face_crop": rgb, "face_mask": face, "mouth_mask": mouth})
    return frames, pixels


def write(frames, data_dir, **overrides):
    kwargs = dict(data_dir=str(data_dir), num_frames=NUM_FRAMES, crop_size=CROP,
                  expression_dim=EXPR, audio_samples=AUDIO)
    kwargs.update(overrides)
    return write_target_video_shards(lambda: iter(frames), **kwargs)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """(frames, pixels, data_dir, dataset_dir) of the subject written once for the module."""
    frames, pixels = make_frames()
    data_dir = tmp_path_factory.mktemp("subject")
    calls = []

    def examples_fn():
        calls.append(1)
        return iter(frames)

    dataset_dir = write_target_video_shards(
        examples_fn, data_dir=str(data_dir), num_frames=NUM_FRAMES, crop_size=CROP,
        expression_dim=EXPR, audio_samples=AUDIO)
    assert len(calls) == 1  # validation continued the train pass instead of re-reading
    return frames, pixels, str(data_dir), dataset_dir


def split_shards(dataset_dir, split):
    """The split's raw serialized records, one list per shard file, in the metadata's order.

    Also checks that the shard files are exactly the ones tfds names for the shard lengths
    recorded in dataset_info.json, and that each holds the recorded number of records.
    """
    with open(os.path.join(dataset_dir, "dataset_info.json")) as f:
        info = {s["name"]: s for s in json.load(f)["splits"]}[split]
    lengths = [int(n) for n in info["shardLengths"]]
    names = [f"target_video-{split}.array_record-{i:05d}-of-{len(lengths):05d}"
             for i in range(len(lengths))]
    assert sorted(n for n in os.listdir(dataset_dir) if f"-{split}." in n) == names
    shards = []
    for name, length in zip(names, lengths):
        source = ArrayRecordDataSource([os.path.join(dataset_dir, name)])
        assert len(source) == length
        shards.append([source[i] for i in range(length)])
    assert sum(len(r) for shard in shards for r in shard) == int(info["numBytes"])
    return shards


def greedy_shard_lengths(record_sizes, limit):
    """Shard lengths of records filled in order into shards of at most `limit` bytes."""
    lengths, used = [], 0
    for size in record_sizes:
        if not lengths or used + size > limit:
            lengths.append(0)
            used = 0
        lengths[-1] += 1
        used += size
    return lengths


@pytest.fixture(scope="module")
def small_shards(subject, tmp_path_factory):
    """(dataset_dir, limit) of the subject rewritten with shards of about two frames each."""
    frames, _, _, dataset_dir = subject
    (records,) = split_shards(dataset_dir, "train")
    limit = int(2.5 * np.median([len(r) for r in records]))
    small_dir = write(frames, tmp_path_factory.mktemp("small_shards"), max_shard_bytes=limit)
    return small_dir, limit


# -- writing and reading back ----------------------------------------------------------------

def test_split_rule():
    assert split_sizes(20, 0.1) == (18, 2)
    assert split_sizes(30, 0.1) == (27, 3)  # 30 * 0.1 is 3.0000000000000004 in floats
    assert split_sizes(5, 0.01) == (4, 1)  # at least one validation frame
    assert split_sizes(2, 0.9) == (1, 1)  # at least one training frame
    for bad in ((1, 0.1), (20, 0.0), (20, 1.0)):
        with pytest.raises(ValueError):
            split_sizes(*bad)


def test_layout(subject):
    _, _, data_dir, dataset_dir = subject
    assert dataset_dir == os.path.join(data_dir, "target_video", "1.0.0")
    names = sorted(os.listdir(dataset_dir))
    assert "dataset_info.json" in names and "features.json" in names
    assert [n for n in names if "array_record" in n] == [
        "target_video-train.array_record-00000-of-00001",
        "target_video-validation.array_record-00000-of-00001"]
    assert target_video_dir(data_dir) == target_video_dir(dataset_dir) == dataset_dir


@pytest.mark.parametrize("split,first,count", [("train", 0, NUM_TRAIN),
                                               ("validation", NUM_TRAIN, NUM_VAL)])
def test_records_read_back_in_time_order(subject, split, first, count):
    frames, _, data_dir, _ = subject
    source = open_target_source(data_dir, split)
    assert len(source) == count
    for position in range(count):
        got, want = source[position], frames[first + position]
        assert set(got) == set(want)
        assert int(got["frame_index"]) == first + position
        assert np.float32(got["time_s"]) == want["time_s"]
        for key in ("face_crop", "face_mask", "mouth_mask"):
            assert got[key] == want[key]  # the exact encoded bytes
        for key, shape in VECTORS.items():
            assert got[key].dtype == np.float32 and got[key].shape == shape
            np.testing.assert_array_equal(got[key], want[key])


def test_decode_example_gives_original_pixels(subject):
    _, pixels, _, dataset_dir = subject
    source = open_target_source(dataset_dir, "validation")
    for position in range(NUM_VAL):
        decoded = decode_example(source[position])
        want = pixels[NUM_TRAIN + position]
        assert decoded["face_crop"].dtype == np.uint8
        assert decoded["face_crop"].shape == (CROP, CROP, 3)
        assert decoded["face_mask"].shape == decoded["mouth_mask"].shape == (CROP, CROP)
        for key in ("face_crop", "face_mask", "mouth_mask"):
            np.testing.assert_array_equal(decoded[key], want[key])
        assert decoded["frame_index"].dtype == np.int64
        assert decoded["expression"].shape == (EXPR,)


def test_bad_frames_are_rejected(tmp_path):
    frames, _ = make_frames()
    with pytest.raises(ValueError, match="expression has shape"):
        write(frames, tmp_path / "a", expression_dim=EXPR + 1)
    with pytest.raises(ValueError, match="crop_size"):
        write(frames, tmp_path / "b", crop_size=CROP * 2)
    with pytest.raises(ValueError, match="increasing frame_index"):
        write(frames[:5] + frames[4:5] + frames[6:], tmp_path / "c")
    with pytest.raises(ValueError, match="examples_fn gave 19 frames"):
        write(frames[:-1], tmp_path / "d")
    with pytest.raises(ValueError, match="more than num_frames"):
        write(frames, tmp_path / "e", num_frames=NUM_FRAMES - 1)


def test_subprocess_writes_without_tensorflow_and_byte_identically(subject, small_shards,
                                                                  tmp_path):
    """A fresh interpreter writes and reads without importing TF and reproduces the same bytes."""
    _, _, _, dataset_dir = subject
    small_dir, limit = small_shards
    script = (
        "import sys\n"
        "from tests.test_target_pipeline import make_frames, write\n"
        "import numpy as np\n"
        "from metatalk_jax.data_pipelines.renderer_windows import renderer_windows\n"
        "from metatalk_jax.data_pipelines.subject_frames import open_target_source\n"
        "from metatalk_jax.data_pipelines.windows import make_window_batches\n"
        "frames = make_frames()[0]\n"
        "out = write(frames, sys.argv[1])\n"
        "small = write(frames, sys.argv[2], max_shard_bytes=int(sys.argv[3]))\n"
        "open_target_source(out, 'validation')[0]\n"
        "open_target_source(small, 'train')[5]\n"
        "np.save(sys.argv[4], np.zeros((20, 64, 64, 3), np.uint8))\n"
        "windows = renderer_windows(out, 'train', render_cache=sys.argv[4])\n"
        "next(make_window_batches(windows, global_batch=2, seed=0))\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "print(out)\n"
        "print(small)\n")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "again"),
                             str(tmp_path / "again_small"), str(limit),
                             str(tmp_path / "renders.npy")], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    other_dir, other_small_dir = result.stdout.strip().splitlines()[-2:]
    for mine, other in ((dataset_dir, other_dir), (small_dir, other_small_dir)):
        names = sorted(os.listdir(mine))
        assert sorted(os.listdir(other)) == names
        for name in names:  # deterministic protobuf: same frames -> same file bytes
            with open(os.path.join(mine, name), "rb") as a, \
                    open(os.path.join(other, name), "rb") as b:
                assert a.read() == b.read(), name


# -- streaming writer: shards, memory, replacing a dataset ------------------------------------

@pytest.mark.parametrize("split,first,count", [("train", 0, NUM_TRAIN),
                                               ("validation", NUM_TRAIN, NUM_VAL)])
def test_small_shards_hold_the_same_records_in_order(subject, small_shards, split, first, count):
    frames, _, _, dataset_dir = subject
    small_dir, limit = small_shards
    (records,) = split_shards(dataset_dir, split)  # the default limit: one shard per split
    shards = split_shards(small_dir, split)
    # Filled in order up to the limit; the records are the very same bytes.
    assert [len(shard) for shard in shards] == greedy_shard_lengths(map(len, records), limit)
    assert all(sum(map(len, shard)) <= limit for shard in shards)
    assert [r for shard in shards for r in shard] == records
    if split == "train":
        assert len(shards) == 9  # 2 frames per shard
    # Through tfds: one source over all shards, record i is the split's i-th frame.
    source = open_target_source(small_dir, split)
    assert len(source) == count
    for position in range(count):
        got = source[position]
        assert int(got["frame_index"]) == first + position
        assert got["face_crop"] == frames[first + position]["face_crop"]
        np.testing.assert_array_equal(got["audio"], frames[first + position]["audio"])


def test_record_over_the_shard_limit_gets_a_shard_of_its_own(subject, tmp_path):
    frames, _, _, _ = subject
    out = write(frames, tmp_path, max_shard_bytes=1)
    assert [len(s) for s in split_shards(out, "train")] == [1] * NUM_TRAIN
    assert [len(s) for s in split_shards(out, "validation")] == [1] * NUM_VAL
    source = open_target_source(out, "train")
    assert [int(source[i]["frame_index"]) for i in range(NUM_TRAIN)] == list(range(NUM_TRAIN))
    with pytest.raises(ValueError, match="max_shard_bytes must be positive"):
        write(frames, tmp_path / "zero", max_shard_bytes=0)


MEMORY_FRAMES, CROP_BYTES = 200, 300_000


def crop_bytes(index):
    """Incompressible stand-in for frame `index`'s encoded crop (not PNG: never decoded here)."""
    return np.random.default_rng([1234, index]).bytes(CROP_BYTES)


def big_frames(count, calls):
    """Frames made on demand, as a video decoder would: only the current one is alive."""
    calls.append(1)
    for i in range(count):
        frame = {"frame_index": i, "time_s": i / 25.0, "face_crop": crop_bytes(i),
                 "face_mask": b"mask", "mouth_mask": b"mask"}
        for key, shape in VECTORS.items():
            frame[key] = np.full(shape, i, np.float32)
        yield frame


def test_write_streams_in_bounded_memory(tmp_path):
    """Peak Python memory during a 60 MB write stays a small fraction of the data written."""
    kwargs = dict(crop_size=CROP, expression_dim=EXPR, audio_samples=AUDIO)
    # One-time costs (lazy imports, caches) first, so that the measurement sees only the write.
    write_target_video_shards(lambda: big_frames(2, []), data_dir=str(tmp_path / "warm"),
                              num_frames=2, **kwargs)
    calls = []
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = write_target_video_shards(lambda: big_frames(MEMORY_FRAMES, calls),
                                        data_dir=str(tmp_path / "big"), num_frames=MEMORY_FRAMES,
                                        **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = MEMORY_FRAMES * CROP_BYTES
    written = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"peak traced memory {peak / 2**20:.2f} MiB while writing {total / 2**20:.1f} MiB of "
          f"crops ({written / 2**20:.1f} MiB of files)")
    assert calls == [1]
    assert written > total
    assert peak < 0.25 * total
    assert "tensorflow" not in sys.modules
    num_train, num_val = split_sizes(MEMORY_FRAMES, 0.1)
    for split, first, count in (("train", 0, num_train), ("validation", num_train, num_val)):
        source = open_target_source(out, split)
        assert len(source) == count
        for position in range(count):
            got = source[position]
            assert int(got["frame_index"]) == first + position
            assert got["face_crop"] == crop_bytes(first + position)


def test_failed_write_leaves_the_previous_dataset(subject, tmp_path):
    frames, _, _, _ = subject
    out = write(frames, tmp_path)
    parent = os.path.dirname(out)
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}

    def not_called():
        raise AssertionError("examples_fn called although the dataset exists")

    # Reused as is without overwrite: examples_fn is not even called.
    assert write_target_video_shards(
        not_called, data_dir=str(tmp_path), num_frames=NUM_FRAMES, crop_size=CROP,
        expression_dim=EXPR, audio_samples=AUDIO) == out
    # A rebuild that fails half way (in the validation split) changes nothing on disk ...
    broken = frames[:NUM_FRAMES - 1] + [dict(frames[-1], gamma=np.zeros(5, np.float32))]
    with pytest.raises(ValueError, match="gamma has shape"):
        write(broken, tmp_path, overwrite=True, max_shard_bytes=1)
    assert os.listdir(parent) == ["1.0.0"]  # no incomplete.* directory left over
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
    # ... and one that fails on a fresh data_dir leaves no dataset at all.
    with pytest.raises(ValueError, match="gamma has shape"):
        write(broken, tmp_path / "fresh")
    assert os.listdir(tmp_path / "fresh" / "target_video") == []
    with pytest.raises(FileNotFoundError):
        target_video_dir(tmp_path / "fresh")
    # A successful rebuild replaces the dataset.
    other_frames, _ = make_frames(seed=1)
    assert write(other_frames, tmp_path, overwrite=True) == out
    assert os.listdir(parent) == ["1.0.0"]
    assert open_target_source(out, "validation")[1]["face_crop"] == other_frames[-1]["face_crop"]
