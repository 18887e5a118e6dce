"""Renderer windows over synthetic target-video shards, and their deterministic global batching.

The synthetic subject's pixels, masks and coefficients are known functions of the frame index,
and its crop boxes are known, so every field of an example is checked against an expectation
computed here from those functions (not read back through the code under test).
"""

import json
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from metatalk_jax.data_pipelines.renderer_windows import RendererWindowSource, make_renderer_batches
from metatalk_jax.data_pipelines.target_video import write_target_video_shards
from metatalk_jax.tracking.crop import CropBoxes, crop_matrices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES, CROP, EXPR, AUDIO = 30, 32, 4, 16
NUM_TRAIN, NUM_VAL = 24, 6  # validation_fraction 0.2: the last 6 frames
WINDOW, HALF = 7, 3
FRAME_SIZE = (180, 240)
KEYS = ("target", "mouth_mask", "expression", "gamma", "angles", "translation",
        "screen_transform", "valid", "frame_index", "example_id", "example_valid")


# -- the synthetic subject -------------------------------------------------------------------

def crop_rgb(i):
    """[C, C, 3] uint8 RGB crop of frame i: smooth ramps plus a texture that depends on i."""
    yy, xx = np.mgrid[0:CROP, 0:CROP]
    return np.stack([(7 * i + 3 * xx + 5 * yy) % 256, (11 * i + xx * yy) % 256,
                     (9 * i + 17 * xx + (xx ^ yy)) % 256], -1).astype(np.uint8)


def mouth_mask(i):
    """[C, C] uint8 0/255 mask of frame i; 2x2 blocks hold 0..4 set pixels, so the reduced
    mask depends on the threshold."""
    yy, xx = np.mgrid[0:CROP, 0:CROP]
    return np.where((xx * (1 + i % 3) + yy * yy + i) % 5 < 2, 255, 0).astype(np.uint8)


def coefficients(i):
    """The 3DMM coefficients of frame i, each a different function of i."""
    return {"expression": i + 0.01 * np.arange(EXPR), "gamma": -i - 0.001 * np.arange(27),
            "angles": 0.01 * i * np.array([1.0, -2.0, 0.5]),
            "translation": np.array([i, 2.0 * i, -0.5 * i])}


def box(i):
    """Frame i's crop box: centre (x, y) and side, frame pixels (continuous coordinates)."""
    return np.array([100.0 + 1.5 * i, 80.0 - 0.75 * i]), 40.0 + 0.5 * i


def frame_dict(i, frame_index=None):
    centre, side = box(i)
    frame = {
        "frame_index": i if frame_index is None else frame_index,
        "time_s": i / 25.0,
        # PNG holds RGB; OpenCV encodes from BGR.
        "face_crop": cv2.imencode(".png", cv2.cvtColor(crop_rgb(i), cv2.COLOR_RGB2BGR))[1]
        .tobytes(),
        "face_mask": cv2.imencode(".png", np.full((CROP, CROP), 255, np.uint8))[1].tobytes(),
        "mouth_mask": cv2.imencode(".png", mouth_mask(i))[1].tobytes(),
        # As prepare stores it: frame pixel index -> crop pixel index at the stored size.
        "crop_transform": crop_matrices(centre[None], np.array([side]), CROP)[0],
        "audio": np.zeros(AUDIO, np.float32),
    }
    frame.update(coefficients(i))
    return frame


def write_subject(data_dir, frame_indices, validation_fraction=0.2):
    frames = [frame_dict(i, index) for i, index in enumerate(frame_indices)]
    return write_target_video_shards(
        lambda: iter(frames), data_dir=str(data_dir), num_frames=len(frames), crop_size=CROP,
        expression_dim=EXPR, audio_samples=AUDIO, validation_fraction=validation_fraction)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return write_subject(tmp_path_factory.mktemp("renderer_subject"), range(NUM_FRAMES))


def expected_screen_transform(i, resolution):
    """Frame continuous -> crop continuous at `resolution`, from the box alone: the box's
    corner goes to 0 and its side to `resolution`."""
    (cx, cy), side = box(i)
    scale = resolution / side
    return np.array([[scale, 0.0, -scale * (cx - side / 2)],
                     [0.0, scale, -scale * (cy - side / 2)]])


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(want, got):
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert set(a) == set(b) == set(KEYS)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- windows ---------------------------------------------------------------------------------

@pytest.mark.parametrize("split,first,count,positions", [
    ("train", 0, NUM_TRAIN, [0, 1, 2, 3, 12, 20, 21, 23]),
    ("validation", NUM_TRAIN, NUM_VAL, [0, 2, 3, 5]),
])
def test_windows_hold_the_neighbours_and_zeros_beyond_the_split(dataset_dir, split, first,
                                                                 count, positions):
    source = RendererWindowSource(dataset_dir, split)
    assert len(source) == count and source.resolution == source.stored_resolution == CROP
    for position in positions:
        example = source[position]
        centre = first + position
        assert example["frame_index"].dtype == np.int64 and example["frame_index"] == centre
        assert example["target"].dtype == np.uint8
        np.testing.assert_array_equal(example["target"], crop_rgb(centre))
        # Positions outside the split (never the other split's frames) are invalid.
        want_valid = [0 <= position + k - HALF < count for k in range(WINDOW)]
        np.testing.assert_array_equal(example["valid"], want_valid)
        assert example["mouth_mask"].shape == (WINDOW, CROP, CROP)
        assert example["mouth_mask"].dtype == np.uint8
        assert example["screen_transform"].shape == (WINDOW, 2, 3)
        for k in range(WINDOW):
            frame = centre + k - HALF
            if want_valid[k]:
                np.testing.assert_array_equal(example["mouth_mask"][k], mouth_mask(frame))
                for key, value in coefficients(frame).items():
                    np.testing.assert_allclose(example[key][k], value, rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(example["screen_transform"][k],
                                           expected_screen_transform(frame, CROP), atol=1e-4)
            else:
                for key in ("mouth_mask", "screen_transform", *coefficients(0)):
                    assert not example[key][k].any(), (key, k)
        for key in coefficients(0):
            assert example[key].dtype == np.float32
    assert source[0]["expression"].shape == (WINDOW, EXPR)
    assert source[0]["gamma"].shape == (WINDOW, 27)
    with pytest.raises(IndexError):
        source[count]


@pytest.mark.parametrize("resolution", [32, 16])
def test_screen_transform_is_the_crop_boxes_map_at_the_training_resolution(dataset_dir,
                                                                           resolution):
    source = RendererWindowSource(dataset_dir, "train", resolution=resolution)
    example = source[10]
    frames = np.arange(10 - HALF, 10 + HALF + 1)
    got = example["screen_transform"].astype(np.float64)
    centres = np.stack([box(i)[0] for i in frames])
    sides = np.array([box(i)[1] for i in frames])
    # The project's convention (what prepare gives face3d.render), and the box edges.
    boxes = CropBoxes(centres.astype(np.float32), sides.astype(np.float32), FRAME_SIZE)
    np.testing.assert_allclose(got, boxes.screen_transform(resolution), atol=1e-3)
    for k, i in enumerate(frames):
        np.testing.assert_allclose(got[k], expected_screen_transform(i, resolution), atol=1e-4)
        (cx, cy), side = box(i)
        corners = np.array([[cx - side / 2, cy - side / 2, 1], [cx + side / 2, cy + side / 2, 1]])
        np.testing.assert_allclose(corners @ got[k].T, [[0, 0], [resolution, resolution]],
                                   atol=1e-3)


@pytest.mark.parametrize("resolution", [16, 8])
def test_reduced_crops_are_inter_area_and_masks_are_rethresholded(dataset_dir, resolution):
    source = RendererWindowSource(dataset_dir, "validation", resolution=resolution)
    example = source[3]
    centre = NUM_TRAIN + 3
    size = (resolution, resolution)
    want = cv2.resize(crop_rgb(centre), size, interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(example["target"], want)
    # INTER_AREA by a whole factor is the block mean (cv2 rounds it).
    factor = CROP // resolution
    block_mean = crop_rgb(centre).reshape(resolution, factor, resolution, factor, 3).mean((1, 3))
    assert np.abs(example["target"] - block_mean).max() <= 0.5 + 1e-6
    for k in range(WINDOW):
        frame = centre + k - HALF
        if frame >= NUM_FRAMES:
            assert not example["valid"][k] and not example["mouth_mask"][k].any()
            continue
        reduced = cv2.resize(mouth_mask(frame), size, interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(example["mouth_mask"][k],
                                      np.where(reduced >= 128, 255, 0).astype(np.uint8))
    coverage = mouth_mask(centre).reshape(resolution, factor, resolution, factor).mean((1, 3))
    assert 0 < ((coverage > 0) & (coverage < 255)).mean()  # the threshold had work to do


def test_bad_arguments_are_rejected(dataset_dir):
    for resolution in (12, 0, 64):
        with pytest.raises(ValueError, match="resolution must divide"):
            RendererWindowSource(dataset_dir, "train", resolution=resolution)
    for window in (6, 0):
        with pytest.raises(ValueError, match="odd"):
            RendererWindowSource(dataset_dir, "train", window=window)
    source = RendererWindowSource(dataset_dir, "train")
    with pytest.raises(ValueError, match="not divisible"):
        make_renderer_batches(source, global_batch=5, seed=0, process_count=2)
    with pytest.raises(ValueError, match="no full global batch"):
        make_renderer_batches(source, global_batch=NUM_TRAIN + 1, seed=0, num_epochs=1)


def test_a_gap_in_the_video_invalidates_the_frames_across_it(tmp_path):
    # Frames 6 and 7 are missing (e.g. no face found): records 5 and 6 are frames 5 and 8.
    indices = [*range(6), *range(8, 14)]
    source = RendererWindowSource(write_subject(tmp_path, indices, 0.1), "train", window=5)
    assert len(source) == 10
    before, after = source[5], source[6]
    assert before["frame_index"] == 5 and after["frame_index"] == 8
    np.testing.assert_array_equal(before["valid"], [True, True, True, False, False])
    np.testing.assert_array_equal(after["valid"], [False, False, True, True, True])
    assert not before["mouth_mask"][3:].any() and not after["expression"][:2].any()
    np.testing.assert_array_equal(after["mouth_mask"][3], mouth_mask(7))  # record 7 = frame 9


class CountingFrames:
    """Wraps a data source, counting the records read through it."""

    def __init__(self, frames):
        self.frames, self.reads = frames, 0

    def __len__(self):
        return len(self.frames)

    def __getitems__(self, positions):
        self.reads += len(positions)
        return self.frames.__getitems__(positions)


def test_after_one_pass_an_example_reads_only_its_own_record(dataset_dir):
    source = RendererWindowSource(dataset_dir, "train", resolution=16)
    counting = source._frames = CountingFrames(source._frames)
    first_pass = [source[i] for i in range(NUM_TRAIN)[::-1]]
    assert counting.reads < WINDOW * NUM_TRAIN
    counting.reads = 0
    order = np.random.default_rng(0).permutation(NUM_TRAIN)
    second_pass = {int(i): source[i] for i in order}
    assert counting.reads == NUM_TRAIN
    fresh = RendererWindowSource(dataset_dir, "train", resolution=16)
    for i in range(NUM_TRAIN):  # what was kept gives the same examples as a fresh read
        for key, value in fresh[i].items():
            np.testing.assert_array_equal(second_pass[i][key], value, err_msg=key)
            np.testing.assert_array_equal(first_pass[NUM_TRAIN - 1 - i][key], value)


# -- batching ----------------------------------------------------------------------------------

def test_processes_together_yield_the_single_process_batches(dataset_dir):
    source = RendererWindowSource(dataset_dir, "train")
    steps = 10  # 60 examples: across two epoch boundaries (24 per epoch)
    single = take(make_renderer_batches(source, global_batch=6, seed=3), steps)
    for b, batch in enumerate(single):
        np.testing.assert_array_equal(batch["example_id"], np.arange(6 * b, 6 * b + 6))
        assert batch["example_valid"].all()
        assert batch["target"].shape == (6, CROP, CROP, 3)
        for row, index in enumerate(batch["frame_index"]):  # each row is its frame's window
            np.testing.assert_array_equal(batch["target"][row], crop_rgb(index))
            np.testing.assert_array_equal(batch["mouth_mask"][row, HALF], mouth_mask(index))
    for processes in (2, 3):
        per_process = [take(make_renderer_batches(source, global_batch=6, seed=3,
                                                  process_index=p, process_count=processes),
                            steps) for p in range(processes)]
        joined = [{key: np.concatenate([batches[b][key] for batches in per_process])
                   for key in KEYS} for b in range(steps)]
        assert_batches_equal(single, joined)


def test_padded_last_batch_is_the_same_split_over_processes(dataset_dir):
    source = RendererWindowSource(dataset_dir, "train")
    # 2 epochs = 48 examples in global batches of 10: 4 full batches, then 8 + 2 padding.
    kwargs = dict(global_batch=10, seed=1, num_epochs=2, drop_remainder=False)
    single = list(make_renderer_batches(source, **kwargs))
    assert len(single) == 5
    last = single[-1]
    np.testing.assert_array_equal(last["example_valid"], [True] * 8 + [False] * 2)
    np.testing.assert_array_equal(last["example_id"], np.arange(40, 50))
    for key in ("target", "frame_index", "expression"):  # padding repeats the last example
        np.testing.assert_array_equal(last[key][8:], last[key][[7, 7]])
    valid_frames = np.concatenate([b["frame_index"][b["example_valid"]] for b in single])
    assert sorted(valid_frames[:NUM_TRAIN]) == sorted(valid_frames[NUM_TRAIN:]) == \
        list(range(NUM_TRAIN))
    per_process = [list(make_renderer_batches(source, process_index=p, process_count=2,
                                              **kwargs)) for p in range(2)]
    assert [len(batches) for batches in per_process] == [5, 5]
    np.testing.assert_array_equal(per_process[1][-1]["example_valid"], [True] * 3 + [False] * 2)
    joined = [{key: np.concatenate([per_process[0][b][key], per_process[1][b][key]])
               for key in KEYS} for b in range(5)]
    assert_batches_equal(single, joined)


def frame_order(source, **kwargs):
    batches = make_renderer_batches(source, **kwargs)
    return np.concatenate([b["frame_index"][b["example_valid"]] for b in batches]).tolist()


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch(dataset_dir):
    source = RendererWindowSource(dataset_dir, "train")
    one_epoch = frame_order(source, global_batch=5, seed=7, num_epochs=1, drop_remainder=False)
    assert sorted(one_epoch) == list(range(NUM_TRAIN)) and one_epoch != sorted(one_epoch)
    dropped = frame_order(source, global_batch=5, seed=7, num_epochs=1)
    assert dropped == one_epoch[:20]  # 4 full batches; the last 4 examples are dropped
    two_epochs = frame_order(source, global_batch=4, seed=7, num_epochs=2)
    assert two_epochs[:NUM_TRAIN] == one_epoch  # the epoch order does not depend on batching
    assert sorted(two_epochs[NUM_TRAIN:]) == list(range(NUM_TRAIN))
    assert two_epochs[NUM_TRAIN:] != one_epoch  # reshuffled each epoch
    other_seed = frame_order(source, global_batch=4, seed=8, num_epochs=2)
    assert other_seed[:NUM_TRAIN] != one_epoch
    # Seeded by the pair (seed, epoch): seed 8's first epoch is not seed 7's second.
    assert other_seed[:NUM_TRAIN] != two_epochs[NUM_TRAIN:]
    assert frame_order(source, global_batch=4, seed=7, num_epochs=1) == one_epoch
    in_order = frame_order(source, global_batch=4, seed=7, num_epochs=1, shuffle=False)
    assert in_order == list(range(NUM_TRAIN))
    validation = RendererWindowSource(dataset_dir, "validation")
    assert frame_order(validation, global_batch=4, seed=0, num_epochs=1, shuffle=False,
                       drop_remainder=False) == list(range(NUM_TRAIN, NUM_FRAMES))


def test_a_restored_state_continues_with_the_same_batches(dataset_dir):
    source = RendererWindowSource(dataset_dir, "train")
    iterator = make_renderer_batches(source, global_batch=4, seed=2, process_index=1,
                                     process_count=2)
    take(iterator, 3)
    state = iterator.get_state()
    json.dumps(state)  # what grain's orbax handler writes
    following = take(iterator, 9)  # crosses the epoch boundary (12 local batches per epoch)
    resumed = make_renderer_batches(source, global_batch=4, seed=2, process_index=1,
                                    process_count=2)
    resumed.set_state(state)
    assert_batches_equal(following, take(resumed, 9))


def test_orbax_checkpoint_manager_round_trip(dataset_dir, tmp_path):
    import grain
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    source = RendererWindowSource(dataset_dir, "train", resolution=16)
    kwargs = dict(global_batch=4, seed=11)
    iterator = make_renderer_batches(source, **kwargs)
    take(iterator, 5)
    model_state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)},
                   "step": jnp.int32(5)}
    manager = ocp.CheckpointManager(tmp_path / "ckpt",
                                    options=ocp.CheckpointManagerOptions(max_to_keep=2))
    manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(model_state),
                                            data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    manager.close()
    following = take(iterator, 6)
    assert os.path.exists(tmp_path / "ckpt" / "5" / "data" / "process_0-of-1.json")

    fresh = make_renderer_batches(source, **kwargs)
    restorer = ocp.CheckpointManager(tmp_path / "ckpt")
    assert restorer.latest_step() == 5
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, model_state)
    restored = restorer.restore(5, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=grain.checkpoint.CheckpointRestore(fresh)))
    restorer.close()
    assert restored.data is fresh
    for want, got in zip(jax.tree.leaves(model_state), jax.tree.leaves(restored.state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert_batches_equal(following, take(fresh, 6))


# -- separate processes: grain workers, and a 2-process jax.distributed checkpoint -------------

def run_python(script, *args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO_ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-4000:]
    return out, err


WORKERS_SCRIPT = """
import gc
import sys
import numpy as np
from absl import flags
from metatalk_jax.data_pipelines.renderer_windows import RendererWindowSource, make_renderer_batches

def plain(batches):  # copies out of grain's shared memory, so nothing outlives the workers
    return [{k: np.array(v) for k, v in b.items()} for b in batches]

if __name__ == "__main__":
    flags.FLAGS.mark_as_parsed()
    source = RendererWindowSource(sys.argv[1], "train", resolution=16)
    kwargs = dict(global_batch=4, seed=4, process_index=1, process_count=2)
    reference = make_renderer_batches(source, **kwargs)
    want = plain(next(reference) for _ in range(8))
    workers = make_renderer_batches(source, worker_count=2, **kwargs)
    got = plain(next(workers) for _ in range(4))
    state = workers.get_state()
    got += plain(next(workers) for _ in range(4))
    workers.close()
    resumed = make_renderer_batches(source, worker_count=2, **kwargs)
    resumed.set_state(state)
    got += plain(next(resumed) for _ in range(4))
    resumed.close()
    del workers, resumed  # finalised now, not during interpreter shutdown
    gc.collect()
    for a, b in zip(want + want[4:], got, strict=True):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    print("same", len(got))
"""


def test_worker_processes_give_the_same_batches_and_restore(dataset_dir):
    out, err = finish(run_python(WORKERS_SCRIPT, dataset_dir))
    assert out.split()[-2:] == ["same", "12"]
    assert "leaked shared_memory" not in err  # every batch's shared memory was released


DISTRIBUTED_SCRIPT = """
import json, sys
import numpy as np
import jax
port, process_id, dataset_dir, ckpt_dir, out_path = sys.argv[1:]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=int(process_id))
import grain
import orbax.checkpoint as ocp
from metatalk_jax.data_pipelines.renderer_windows import RendererWindowSource, make_renderer_batches

source = RendererWindowSource(dataset_dir, "train")
kwargs = dict(global_batch=6, seed=5, process_index=jax.process_index(),
              process_count=jax.process_count())
iterator = make_renderer_batches(source, **kwargs)
for _ in range(3):
    next(iterator)
state = {"step": np.asarray(3), "w": np.arange(4.0)}
manager = ocp.CheckpointManager(ckpt_dir)
manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        data=grain.checkpoint.CheckpointSave(iterator)))
manager.wait_until_finished()
ids = lambda it: [next(it)["example_id"].tolist() for _ in range(4)]
after_save = ids(iterator)
fresh = make_renderer_batches(source, **kwargs)
restored = manager.restore(3, args=ocp.args.Composite(
    state=ocp.args.StandardRestore(state), data=grain.checkpoint.CheckpointRestore(fresh)))
manager.close()
json.dump({"process": jax.process_index(), "after_save": after_save, "after_restore": ids(fresh),
           "w": restored.state["w"].tolist()}, open(out_path, "w"))
"""


def test_two_processes_checkpoint_and_restore_their_own_iterator_states(dataset_dir, tmp_path):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    ckpt = tmp_path / "ckpt"
    processes = [run_python(DISTRIBUTED_SCRIPT, port, p, dataset_dir, ckpt, tmp_path / f"{p}.json")
                 for p in range(2)]
    for process in processes:
        finish(process)
    assert sorted(os.listdir(ckpt / "3" / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
    # Steps 3..6 of the stream: process p holds positions [6b + 3p, 6b + 3p + 3).
    for p in range(2):
        result = json.load(open(tmp_path / f"{p}.json"))
        want = [list(range(6 * b + 3 * p, 6 * b + 3 * p + 3)) for b in range(3, 7)]
        assert result["process"] == p
        assert result["after_save"] == result["after_restore"] == want
        assert result["w"] == [0.0, 1.0, 2.0, 3.0]
