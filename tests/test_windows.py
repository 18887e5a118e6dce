"""The one windowed pipeline (data_pipelines/windows.py) and what the A2E and renderer windows hold.

The synthetic subject's crops, masks, coefficients, audio and cached renders are known functions
of the frame index, and the pseudo clips' expressions of (clip, frame), so every example is
checked against an expectation computed here from those functions, and every batch row against
the stream the module docstring specifies (rows, epoch permutations, padding) computed here.
"""

import json
import os
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from metatalk_jax.data_pipelines.a2e_windows import a2e_windows, pseudo_frame_sources
from metatalk_jax.data_pipelines.pseudo_corpus import PseudoClip, PseudoVideoWriter
from metatalk_jax.data_pipelines.renderer_windows import renderer_windows
from metatalk_jax.data_pipelines.subject_frames import open_target_source, write_target_video_shards
from metatalk_jax.data_pipelines.windows import make_window_batches
from metatalk_jax.media.frame_audio_windows import frame_mel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_FRAMES, CROP, EXPR, AUDIO, MEL = 30, 32, 4, 2400, 4
NUM_TRAIN, NUM_VAL = 24, 6  # validation_fraction 0.2: the last 6 frames
WINDOW, HALF = 7, 3
RENDERER_KEYS = {"render", "mouth_mask", "valid", "target"}
A2E_KEYS = {"mel", "expression", "valid"}
BATCH_KEYS = {"example_id", "example_valid"}
FINGERPRINT = "synthetic-windows"
CLIP_FRAMES = (9, 5, 12)            # three pseudo clips, all in the train split


# -- the synthetic subject and corpus ----------------------------------------------------------

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


def audio_of(i, clip=0):
    """[AUDIO] float32 audio window of frame i of clip `clip`: a tone whose pitch and loudness
    follow (clip, i), so neighbouring frames' mels differ."""
    t = np.arange(AUDIO) / 16000.0
    return (0.1 + 0.02 * (i % 5)) * np.sin(2 * np.pi * (300.0 + 40 * i + 500 * clip) * t)


def expression_of(i, clip=None):
    """The target frame's expression (clip None) or pseudo clip `clip`'s frame i's."""
    base = i if clip is None else 1000 + 100 * clip + i
    return (base + 0.01 * np.arange(EXPR)).astype(np.float32)


def render_of(frame, resolution):
    """[R, R, 3] uint8: the synthetic render cache's entry of video frame `frame`."""
    yy, xx = np.mgrid[0:resolution, 0:resolution]
    return np.stack([(13 * frame + xx) % 256, (5 * frame + yy) % 256,
                     np.full_like(xx, frame)], -1).astype(np.uint8)


def frame_dict(i, frame_index):
    return {
        "frame_index": frame_index, "time_s": frame_index / 25.0,
        # PNG holds RGB; OpenCV encodes from BGR.
        "face_crop": cv2.imencode(".png", cv2.cvtColor(crop_rgb(i), cv2.COLOR_RGB2BGR))[1]
        .tobytes(),
        "face_mask": cv2.imencode(".png", np.full((CROP, CROP), 255, np.uint8))[1].tobytes(),
        "mouth_mask": cv2.imencode(".png", mouth_mask(i))[1].tobytes(),
        "expression": expression_of(i), "gamma": np.zeros(27), "angles": np.zeros(3),
        "translation": np.zeros(3), "crop_transform": np.eye(2, 3), "audio": audio_of(i),
    }


def write_subject(data_dir, frame_indices, validation_fraction=0.2):
    """Target shards whose record i holds frame i's pixels under frame_index frame_indices[i]."""
    frames = [frame_dict(i, index) for i, index in enumerate(frame_indices)]
    return write_target_video_shards(
        lambda: iter(frames), data_dir=str(data_dir), num_frames=len(frames), crop_size=CROP,
        expression_dim=EXPR, audio_samples=AUDIO, validation_fraction=validation_fraction)


def write_render_cache(path, resolution, num_frames=NUM_FRAMES):
    np.save(path, np.stack([render_of(t, resolution) for t in range(num_frames)]))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """{"dataset": target shards, "pseudo": corpus root, "cache": {R: render cache path}}."""
    root = tmp_path_factory.mktemp("windows")
    writer = PseudoVideoWriter(str(root / "pseudo"), expression_dim=EXPR, audio_samples=AUDIO,
                               subject_fingerprint=FINGERPRINT)
    writer.write_part([PseudoClip(f"spk/{c}", np.stack([expression_of(t, c) for t in range(n)]),
                                  np.stack([audio_of(t, c) for t in range(n)]), np.arange(n),
                                  split="train")
                       for c, n in enumerate(CLIP_FRAMES)])
    return {"dataset": write_subject(root / "subject", range(NUM_FRAMES)),
            "pseudo": str(root / "pseudo"),
            "cache": {r: write_render_cache(root / f"renders_{r}.npy", r) for r in (32, 16, 8)}}


def renderer(data, split="train", resolution=CROP, **kwargs):
    return renderer_windows(data["dataset"], split, render_cache=data["cache"][resolution],
                            resolution=resolution, **kwargs)


def a2e_target(data, split="train", window=5):
    return a2e_windows([open_target_source(data["dataset"], split)], window=window,
                       mel_columns=MEL)


def a2e_pseudo(data, window=5):
    return a2e_windows(pseudo_frame_sources([data["pseudo"]], "train", expression_dim=EXPR,
                                            audio_samples=AUDIO,
                                            subject_fingerprint=FINGERPRINT),
                       window=window, mel_columns=MEL)


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(want, got):
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- what a window holds -----------------------------------------------------------------------

@pytest.mark.parametrize("split,first,count,positions", [
    ("train", 0, NUM_TRAIN, [0, 1, 2, 3, 12, 20, 21, 23]),
    ("validation", NUM_TRAIN, NUM_VAL, [0, 2, 3, 5]),
])
def test_renderer_windows_hold_renders_masks_and_the_crop_and_zeros_beyond_the_split(
        data, split, first, count, positions):
    source = renderer(data, split)
    assert len(source) == count
    for position in positions:
        example = source[position]
        centre = first + position
        assert set(example) == RENDERER_KEYS       # only what the renderer task reads
        assert example["target"].dtype == np.uint8
        np.testing.assert_array_equal(example["target"], crop_rgb(centre))
        # Positions outside the split (never the other split's frames) are invalid.
        want_valid = [0 <= position + k - HALF < count for k in range(WINDOW)]
        np.testing.assert_array_equal(example["valid"], want_valid)
        assert example["render"].shape == (WINDOW, CROP, CROP, 3)
        assert example["mouth_mask"].shape == (WINDOW, CROP, CROP)
        for k in range(WINDOW):
            frame = centre + k - HALF
            if want_valid[k]:
                np.testing.assert_array_equal(example["mouth_mask"][k], mouth_mask(frame))
                np.testing.assert_array_equal(example["render"][k], render_of(frame, CROP))
            else:
                assert not example["mouth_mask"][k].any() and not example["render"][k].any()
    with pytest.raises(IndexError):
        source[count]


@pytest.mark.parametrize("resolution", [16, 8])
def test_reduced_crops_are_inter_area_and_masks_are_rethresholded(data, resolution):
    example = renderer(data, "validation", resolution)[3]
    centre = NUM_TRAIN + 3
    size = (resolution, resolution)
    np.testing.assert_array_equal(example["target"], cv2.resize(crop_rgb(centre), size,
                                                                interpolation=cv2.INTER_AREA))
    # INTER_AREA by a whole factor is the block mean (cv2 rounds it).
    factor = CROP // resolution
    block_mean = crop_rgb(centre).reshape(resolution, factor, resolution, factor, 3).mean((1, 3))
    assert np.abs(example["target"] - block_mean).max() <= 0.5 + 1e-6
    for k in range(WINDOW):
        frame = centre + k - HALF
        if frame >= NUM_FRAMES:
            assert not example["valid"][k] and not example["mouth_mask"][k].any()
            continue
        coverage = mouth_mask(frame).reshape(resolution, factor, resolution, factor).mean((1, 3))
        np.testing.assert_array_equal(example["mouth_mask"][k],
                                      np.where(coverage >= 127.5, 255, 0).astype(np.uint8))
        np.testing.assert_array_equal(example["render"][k], render_of(frame, resolution))
    coverage = mouth_mask(centre).reshape(resolution, factor, resolution, factor).mean((1, 3))
    assert 0 < ((coverage > 0) & (coverage < 255)).mean()  # the threshold had work to do


def test_a2e_windows_hold_each_frames_mel_and_expression_and_stop_at_clip_ends(data):
    target = a2e_target(data)
    example = target[10]
    assert set(example) == A2E_KEYS               # only what the A2E task reads
    assert example["mel"].shape == (5, 80, MEL) and example["valid"].all()
    for k in range(5):
        frame = 10 + k - 2
        np.testing.assert_array_equal(example["mel"][k], frame_mel(audio_of(frame), MEL))
        np.testing.assert_array_equal(example["expression"][k], expression_of(frame))
    pseudo = a2e_pseudo(data)
    assert len(pseudo) == sum(CLIP_FRAMES)
    # Record 9 is frame 0 of clip 1 (5 frames): nothing of clip 0 or 2 enters its windows.
    first, last = pseudo[9], pseudo[13]
    np.testing.assert_array_equal(first["valid"], [False, False, True, True, True])
    np.testing.assert_array_equal(last["valid"], [True, True, True, False, False])
    for example, centre in ((first, 0), (last, 4)):
        for k in np.flatnonzero(example["valid"]):
            frame = centre + k - 2
            np.testing.assert_array_equal(example["expression"][k], expression_of(frame, 1))
            np.testing.assert_array_equal(example["mel"][k], frame_mel(audio_of(frame, 1), MEL))
        assert not example["mel"][~example["valid"]].any()
        assert not example["expression"][~example["valid"]].any()


def test_a_gap_in_the_video_invalidates_the_frames_across_it(tmp_path):
    # Frames 6 and 7 are missing (e.g. no face found): records 5 and 6 are frames 5 and 8.
    indices = [*range(6), *range(8, 14)]
    cache = write_render_cache(tmp_path / "renders.npy", CROP, 14)
    source = renderer_windows(write_subject(tmp_path, indices, 0.1), "train", render_cache=cache,
                              window=5)
    assert len(source) == 10
    before, after = source[5], source[6]
    np.testing.assert_array_equal(before["valid"], [True, True, True, False, False])
    np.testing.assert_array_equal(after["valid"], [False, False, True, True, True])
    assert not before["mouth_mask"][3:].any() and not after["render"][:2].any()
    np.testing.assert_array_equal(after["mouth_mask"][3], mouth_mask(7))  # record 7 = frame 9
    np.testing.assert_array_equal(after["render"][3], render_of(9, CROP))  # by frame_index
    np.testing.assert_array_equal(before["render"][2], render_of(5, CROP))


class CountingFrames:
    """Wraps a data source, counting the records read through it."""

    def __init__(self, frames):
        self.frames, self.reads = frames, 0

    def __len__(self):
        return len(self.frames)

    def __getitems__(self, positions):
        self.reads += len(positions)
        return self.frames.__getitems__(positions)


@pytest.mark.parametrize("kind,reads_per_example", [("renderer", 1), ("a2e", 0)])
def test_after_one_pass_an_example_reads_at_most_its_own_record(data, kind, reads_per_example):
    make = (lambda: renderer(data, resolution=16)) if kind == "renderer" else \
        (lambda: a2e_target(data))
    source = make()
    counting = source._frames = CountingFrames(source._frames)
    first_pass = [source[i] for i in range(NUM_TRAIN)[::-1]]
    assert counting.reads < WINDOW * NUM_TRAIN
    counting.reads = 0
    order = np.random.default_rng(0).permutation(NUM_TRAIN)
    second_pass = {int(i): source[i] for i in order}
    assert counting.reads == reads_per_example * NUM_TRAIN
    fresh = make()
    for i in range(NUM_TRAIN):  # what was kept gives the same examples as a fresh read
        for key, value in fresh[i].items():
            np.testing.assert_array_equal(second_pass[i][key], value, err_msg=key)
            np.testing.assert_array_equal(first_pass[NUM_TRAIN - 1 - i][key], value)


def test_bad_arguments_are_rejected(data, tmp_path):
    for resolution in (12, 0, 64):
        with pytest.raises(ValueError, match="resolution must divide"):
            renderer_windows(data["dataset"], "train", render_cache=data["cache"][32],
                             resolution=resolution)
    for window in (6, 0):
        with pytest.raises(ValueError, match="odd"):
            renderer(data, window=window)
    with pytest.raises(ValueError, match=r"expected \[T, 16, 16, 3\]"):
        renderer_windows(data["dataset"], "train", render_cache=data["cache"][32], resolution=16)
    with pytest.raises(ValueError, match="cannot hold 60 mel columns"):
        a2e_windows([open_target_source(data["dataset"], "train")], window=5, mel_columns=60)
    source, pseudo = renderer(data), a2e_pseudo(data)
    with pytest.raises(ValueError, match="not divisible"):
        make_window_batches(source, global_batch=5, seed=0, process_count=2)
    with pytest.raises(ValueError, match="no full global batch"):
        make_window_batches(source, global_batch=NUM_TRAIN + 1, seed=0, num_epochs=1)
    with pytest.raises(ValueError, match=r"pseudo_ratio must be in \[0, 1\]"):
        make_window_batches(source, pseudo, global_batch=4, pseudo_ratio=1.5)
    with pytest.raises(ValueError, match="from pseudo data, which has none"):
        make_window_batches(source, None, global_batch=4, pseudo_ratio=0.5)
    with pytest.raises(ValueError, match="a finite stream"):
        make_window_batches(a2e_target(data), pseudo, global_batch=4, pseudo_ratio=0.5,
                            num_epochs=1)


# -- the global stream -------------------------------------------------------------------------

def expected_rows(sizes, global_batch, pseudo_ratio, seed, batch, shuffle=True):
    """[(stream, source index, example_id)] of global batch `batch`, from the specification."""
    pseudo_count = round(global_batch * pseudo_ratio)
    per_batch = (global_batch - pseudo_count, pseudo_count)
    ranks, rows = [0, 0], []
    for g in range(global_batch):
        stream = int((g + 1) * pseudo_count // global_batch > g * pseudo_count // global_batch)
        position = batch * per_batch[stream] + ranks[stream]
        ranks[stream] += 1
        epoch, offset = divmod(position, sizes[stream])
        if shuffle:
            offset = np.random.default_rng([seed, stream, epoch]).permutation(sizes[stream])[offset]
        rows.append((stream, int(offset), batch * global_batch + g))
    return rows


@pytest.mark.parametrize("global_batch,pseudo_ratio,seed", [(8, 0.25, 7), (6, 0.0, 3),
                                                            (4, 1.0, 1)])
def test_batches_follow_the_specified_stream_for_any_process_count(data, global_batch,
                                                                   pseudo_ratio, seed):
    """Rows, mixing, epoch permutations and example ids as the module docstring specifies, and
    the processes' batches concatenated in order are the single-process batch."""
    sources = (a2e_target(data), a2e_pseudo(data))
    sizes = tuple(len(s) for s in sources)
    args = dict(global_batch=global_batch, pseudo_ratio=pseudo_ratio, seed=seed, read_threads=0)
    steps = 10  # 60-80 examples: across the epoch boundaries of both streams
    single = take(make_window_batches(*sources, **args), steps)
    for b, batch in enumerate(single):
        assert set(batch) == A2E_KEYS | BATCH_KEYS
        assert batch["example_valid"].all()
        for g, (stream, index, example_id) in enumerate(
                expected_rows(sizes, global_batch, pseudo_ratio, seed, b)):
            assert batch["example_id"][g] == example_id
            for key, value in sources[stream][index].items():
                np.testing.assert_array_equal(batch[key][g], value, err_msg=(b, g, key))
    for processes in (2, 4):
        if global_batch % processes:
            continue
        per_process = [take(make_window_batches(*sources, process_index=p,
                                                process_count=processes, **args), steps)
                       for p in range(processes)]
        joined = [{key: np.concatenate([batches[b][key] for batches in per_process])
                   for key in single[0]} for b in range(steps)]
        assert_batches_equal(single, joined)


def test_renderer_stream_epochs_are_the_seeded_permutations_and_padding_repeats(data):
    source = renderer(data)

    def frames(**kwargs):  # the frame each real row holds, found from its target crop
        batches = list(make_window_batches(source, **kwargs))
        crops = {crop_rgb(i).tobytes(): i for i in range(NUM_TRAIN)}
        return batches, [crops[t.tobytes()] for b in batches
                         for t in b["target"][b["example_valid"]]]

    _, one_epoch = frames(global_batch=5, seed=7, num_epochs=1, drop_remainder=False)
    assert one_epoch == np.random.default_rng([7, 0, 0]).permutation(NUM_TRAIN).tolist()
    assert frames(global_batch=5, seed=7, num_epochs=1)[1] == one_epoch[:20]  # 4 full batches
    _, two_epochs = frames(global_batch=4, seed=7, num_epochs=2)
    assert two_epochs[:NUM_TRAIN] == one_epoch  # the epoch order does not depend on batching
    assert two_epochs[NUM_TRAIN:] == np.random.default_rng([7, 0, 1]).permutation(
        NUM_TRAIN).tolist()
    assert frames(global_batch=4, seed=7, num_epochs=1, shuffle=False)[1] == list(range(NUM_TRAIN))
    # 2 epochs = 48 examples in global batches of 10: 4 full batches, then 8 + 2 padding.
    kwargs = dict(global_batch=10, seed=1, num_epochs=2, drop_remainder=False)
    single, _ = frames(**kwargs)
    assert len(single) == 5 and set(single[0]) == RENDERER_KEYS | BATCH_KEYS
    last = single[-1]
    np.testing.assert_array_equal(last["example_valid"], [True] * 8 + [False] * 2)
    np.testing.assert_array_equal(last["example_id"], np.arange(40, 50))
    for key in RENDERER_KEYS:  # padding repeats the last example
        np.testing.assert_array_equal(last[key][8:], last[key][[7, 7]])
    per_process = [list(make_window_batches(source, process_index=p, process_count=2, **kwargs))
                   for p in range(2)]
    assert [len(batches) for batches in per_process] == [5, 5]
    np.testing.assert_array_equal(per_process[1][-1]["example_valid"], [True] * 3 + [False] * 2)
    joined = [{key: np.concatenate([per_process[0][b][key], per_process[1][b][key]])
               for key in single[0]} for b in range(5)]
    assert_batches_equal(single, joined)


def test_a_restored_state_continues_with_the_same_batches(data):
    sources = (a2e_target(data), a2e_pseudo(data))
    args = dict(global_batch=4, pseudo_ratio=0.5, seed=2, process_index=1, process_count=2)
    iterator = make_window_batches(*sources, **args)
    take(iterator, 3)
    state = iterator.get_state()
    json.dumps(state)  # what grain's orbax handler writes
    following = take(iterator, 15)  # crosses the epoch boundaries of both streams
    resumed = make_window_batches(*sources, **args)
    resumed.set_state(state)
    assert_batches_equal(following, take(resumed, 15))


def test_orbax_checkpoint_manager_round_trip(data, tmp_path):
    import grain
    import jax
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    source = renderer(data, resolution=16)
    kwargs = dict(global_batch=4, seed=11)
    iterator = make_window_batches(source, **kwargs)
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

    fresh = make_window_batches(source, **kwargs)
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
from metatalk_jax.data_pipelines.renderer_windows import renderer_windows
from metatalk_jax.data_pipelines.windows import make_window_batches

def plain(batches):  # copies out of grain's shared memory, so nothing outlives the workers
    return [{k: np.array(v) for k, v in b.items()} for b in batches]

if __name__ == "__main__":
    flags.FLAGS.mark_as_parsed()
    source = renderer_windows(sys.argv[1], "train", render_cache=sys.argv[2], resolution=16)
    kwargs = dict(global_batch=4, seed=4, process_index=1, process_count=2)
    reference = make_window_batches(source, **kwargs)
    want = plain(next(reference) for _ in range(8))
    workers = make_window_batches(source, worker_count=2, **kwargs)
    got = plain(next(workers) for _ in range(4))
    state = workers.get_state()
    got += plain(next(workers) for _ in range(4))
    workers.close()
    resumed = make_window_batches(source, worker_count=2, **kwargs)
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


def test_worker_processes_give_the_same_batches_and_restore(data):
    out, err = finish(run_python(WORKERS_SCRIPT, data["dataset"], data["cache"][16]))
    assert out.split()[-2:] == ["same", "12"]
    assert "leaked shared_memory" not in err  # every batch's shared memory was released


DISTRIBUTED_SCRIPT = """
import json, sys
import numpy as np
import jax
port, process_id, dataset_dir, cache, ckpt_dir, out_path = sys.argv[1:]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=int(process_id))
import grain
import orbax.checkpoint as ocp
from metatalk_jax.data_pipelines.renderer_windows import renderer_windows
from metatalk_jax.data_pipelines.windows import make_window_batches

source = renderer_windows(dataset_dir, "train", render_cache=cache)
kwargs = dict(global_batch=6, seed=5, process_index=jax.process_index(),
              process_count=jax.process_count())
iterator = make_window_batches(source, **kwargs)
for _ in range(3):
    next(iterator)
state = {"step": np.asarray(3), "w": np.arange(4.0)}
manager = ocp.CheckpointManager(ckpt_dir)
manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        data=grain.checkpoint.CheckpointSave(iterator)))
manager.wait_until_finished()
ids = lambda it: [next(it)["example_id"].tolist() for _ in range(4)]
after_save = ids(iterator)
fresh = make_window_batches(source, **kwargs)
restored = manager.restore(3, args=ocp.args.Composite(
    state=ocp.args.StandardRestore(state), data=grain.checkpoint.CheckpointRestore(fresh)))
manager.close()
json.dump({"process": jax.process_index(), "after_save": after_save, "after_restore": ids(fresh),
           "w": restored.state["w"].tolist()}, open(out_path, "w"))
"""


def test_two_processes_checkpoint_and_restore_their_own_iterator_states(data, tmp_path):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    ckpt = tmp_path / "ckpt"
    processes = [run_python(DISTRIBUTED_SCRIPT, port, p, data["dataset"], data["cache"][32], ckpt,
                            tmp_path / f"{p}.json") for p in range(2)]
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
