"""target_video TFDS/ArrayRecord writer and grain loader, on a synthetic 20-frame subject."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_pipelines.target_loader import (
    decode_example,
    make_target_loader,
    open_target_source,
    target_video_dir,
)
from data_pipelines.target_video import split_sizes, write_target_video_shards

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


def take(loader_or_iterator, count):
    iterator = iter(loader_or_iterator)
    return [next(iterator) for _ in range(count)]


def loader(dataset_dir, **kwargs):
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("seed", 7)
    return make_target_loader(dataset_dir, "train", **kwargs)


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


def test_subprocess_writes_without_tensorflow_and_byte_identically(subject, tmp_path):
    """A fresh interpreter writes and reads without importing TF and reproduces the same bytes."""
    _, _, _, dataset_dir = subject
    script = (
        "import sys\n"
        "from tests.test_target_pipeline import make_frames, write\n"
        "from data_pipelines.target_loader import make_target_loader, open_target_source\n"
        "out = write(make_frames()[0], sys.argv[1])\n"
        "open_target_source(out, 'validation')[0]\n"
        "next(iter(make_target_loader(out, 'train', batch_size=2, seed=0)))\n"
        "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
        "print(out)\n")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "again")], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    other_dir = result.stdout.strip().splitlines()[-1]
    for name in sorted(os.listdir(dataset_dir)):
        if "array_record" in name:  # deterministic protobuf: same frames -> same file bytes
            with open(os.path.join(dataset_dir, name), "rb") as a, \
                    open(os.path.join(other_dir, name), "rb") as b:
                assert a.read() == b.read(), name


# -- grain loader ------------------------------------------------------------------------------

def test_batches_have_right_shapes_dtypes_and_values(subject):
    _, pixels, _, dataset_dir = subject
    batch = take(loader(dataset_dir, batch_size=4), 1)[0]
    assert batch["frame_index"].shape == (4,) and batch["frame_index"].dtype == np.int64
    assert batch["time_s"].shape == (4,) and batch["time_s"].dtype == np.float32
    assert batch["face_crop"].shape == (4, CROP, CROP, 3)
    assert batch["face_mask"].shape == batch["mouth_mask"].shape == (4, CROP, CROP)
    for key, shape in VECTORS.items():
        assert batch[key].shape == (4, *shape)
    for key in ("face_crop", "face_mask", "mouth_mask", *VECTORS):
        assert batch[key].dtype == np.float32
    for row, index in enumerate(batch["frame_index"]):
        for key in ("face_crop", "face_mask", "mouth_mask"):
            np.testing.assert_array_equal(batch[key][row], pixels[index][key] / np.float32(255))


def test_each_epoch_covers_train_once(subject):
    _, _, _, dataset_dir = subject
    one_epoch = take(loader(dataset_dir, num_epochs=1, drop_remainder=False), NUM_TRAIN // 3)
    indices = np.concatenate([b["frame_index"] for b in one_epoch])
    assert sorted(indices.tolist()) == list(range(NUM_TRAIN))
    assert indices.tolist() != list(range(NUM_TRAIN))  # shuffled
    with pytest.raises(StopIteration):  # finite: exactly one epoch
        iterator = iter(loader(dataset_dir, num_epochs=1))
        take(iterator, NUM_TRAIN // 3 + 1)
    # Repeating: every epoch is a fresh permutation of the whole split.
    two_epochs = np.concatenate([b["frame_index"] for b in take(loader(dataset_dir),
                                                                2 * NUM_TRAIN // 3)])
    first, second = two_epochs[:NUM_TRAIN].tolist(), two_epochs[NUM_TRAIN:].tolist()
    assert sorted(first) == sorted(second) == list(range(NUM_TRAIN))
    assert first != second


def test_shards_are_disjoint_and_cover_the_split(subject):
    _, _, _, dataset_dir = subject
    shards = []
    for shard_index in range(2):
        batches = take(loader(dataset_dir, shard_index=shard_index, shard_count=2, num_epochs=1),
                       NUM_TRAIN // 2 // 3)
        shards.append(set(np.concatenate([b["frame_index"] for b in batches]).tolist()))
    assert len(shards[0]) == len(shards[1]) == NUM_TRAIN // 2
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(NUM_TRAIN))


def test_order_follows_the_seed(subject):
    _, _, _, dataset_dir = subject

    def order(seed):
        return [b["frame_index"].tolist() for b in take(loader(dataset_dir, seed=seed), 8)]

    assert order(7) == order(7)
    assert order(7) != order(8)
    unshuffled = take(loader(dataset_dir, shuffle=False, batch_size=6), 3)
    assert np.concatenate([b["frame_index"] for b in unshuffled]).tolist() == list(range(NUM_TRAIN))


def test_restored_state_resumes_with_the_following_batches(subject):
    _, _, _, dataset_dir = subject
    iterator = iter(loader(dataset_dir, batch_size=4))
    take(iterator, 3)
    state = iterator.get_state()
    following = take(iterator, 7)  # crosses the epoch boundary (18 frames = 4.5 batches)
    resumed = iter(loader(dataset_dir, batch_size=4))
    resumed.set_state(state)
    for want, got in zip(following, take(resumed, 7)):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
