"""The pseudo-video corpus format: round trip, split by clip, appending parts, atomicity, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from metatalk_jax.data_pipelines.pseudo_corpus import (CORPUS_JSON, PseudoClip, PseudoVideoWriter,
                                                       clip_split, open_pseudo_video)

E, N = 6, 320
FINGERPRINT = "subject-sha"


def make_clip(name, frames, seed, **kwargs):
    rng = np.random.default_rng(seed)
    return PseudoClip(name, rng.standard_normal((frames, E)).astype(np.float32),
                      rng.standard_normal((frames, N)).astype(np.float32),
                      rng.integers(0, 500, frames), **kwargs)


def writer(root, **overrides):
    kwargs = dict(expression_dim=E, audio_samples=N, subject_fingerprint=FINGERPRINT)
    kwargs.update(overrides)
    return PseudoVideoWriter(root, **kwargs)


def records(corpus, split):
    source = corpus.source(split)
    return [source[i] for i in range(len(source))]


def assert_clip_records(rows, clip):
    assert len(rows) == len(clip.expression)
    for t, row in enumerate(rows):
        assert row["clip_id"] == clip.clip_id.encode()
        assert int(row["frame_index"]) == (t if clip.frame_index is None else clip.frame_index[t])
        assert int(row["source_frame"]) == int(clip.source_frame[t])
        np.testing.assert_array_equal(row["expression"], clip.expression[t])
        np.testing.assert_array_equal(row["audio"], clip.audio[t])
        expected_time = (np.float32(clip.frame_index[t] / 25.0) if clip.frame_index is not None
                         else np.float32(t / 25.0))
        assert row["time_s"] == expected_time


def test_round_trip_is_bit_exact_and_split_by_clip(tmp_path):
    clips = [make_clip("spk01/00001", 7, 0), make_clip("spk01/00002", 4, 1, split="validation"),
             make_clip("spk02/00001", 5, 2, frame_index=np.array([3, 4, 6, 7, 9])),
             make_clip("spk03/00007", 3, 3, split="train")]
    part_dir = writer(tmp_path / "c").write_part(iter(clips))
    assert os.path.isfile(os.path.join(part_dir, "dataset_info.json"))
    corpus = open_pseudo_video(tmp_path / "c", expression_dim=E, audio_samples=N,
                               subject_fingerprint=FINGERPRINT)
    splits = {c.clip_id: c.split or clip_split(c.clip_id, 0.1) for c in clips}
    for split in ("train", "validation"):
        rows = records(corpus, split)
        expected = [c for c in clips if splits[c.clip_id] == split]
        assert [c["clip_id"] for c in corpus.clips[split]] == [c.clip_id for c in expected]
        assert corpus.num_frames(split) == len(rows) == sum(len(c.expression) for c in expected)
        start = 0
        for clip in expected:
            assert_clip_records(rows[start:start + len(clip.expression)], clip)
            start += len(clip.expression)
    meta = json.load(open(tmp_path / "c" / CORPUS_JSON))
    assert meta["expression_dim"] == E and meta["audio_samples"] == N and meta["fps"] == 25.0
    assert sorted(c["clip_id"] for c in meta["clips"]) == sorted(splits)


def test_same_clips_give_byte_identical_shards(tmp_path):
    for name in ("a", "b"):
        writer(tmp_path / name).write_part([make_clip("x/1", 5, 0), make_clip("y/2", 3, 1)])
    part = os.path.join("part-00000", "pseudo_video", "1.0.0")
    shards = sorted(f for f in os.listdir(tmp_path / "a" / part) if ".array_record" in f)
    assert shards
    for shard in shards:
        assert (tmp_path / "a" / part / shard).read_bytes() == \
            (tmp_path / "b" / part / shard).read_bytes()


def test_clip_split_is_a_stable_hash_of_the_id():
    ids = [f"spk{i // 50:03d}/{i % 50:05d}" for i in range(4000)]
    held_out = [clip_split(i, 0.1) == "validation" for i in ids]
    assert 0.08 < np.mean(held_out) < 0.12
    assert [clip_split(i, 0.1) == "validation" for i in reversed(ids)] == held_out[::-1]
    assert all(clip_split(i, 0.0) == "train" for i in ids[:100])


def test_appending_parts_resumes_where_a_run_stopped(tmp_path):
    root = tmp_path / "c"
    first = [make_clip(f"s/{i}", 3, i) for i in range(3)]
    writer(root).write_part(first)
    again = writer(root)                          # a new run (e.g. after a crash)
    assert again.done_clips() == {"s/0", "s/1", "s/2"}
    rest = [make_clip(f"s/{i}", 2 + i, i) for i in range(2, 6)]
    again.write_part(c for c in rest if c.clip_id not in again.done_clips())
    corpus = open_pseudo_video(root)
    assert len(corpus.part_dirs) == 2
    everything = first + rest[1:]
    listed = [c["clip_id"] for split in ("train", "validation") for c in corpus.clips[split]]
    assert sorted(listed) == sorted(c.clip_id for c in everything)
    train = records(corpus, "train")
    start = 0
    for clip in [c for c in everything if clip_split(c.clip_id, 0.1) == "train"]:
        assert_clip_records(train[start:start + len(clip.expression)], clip)
        start += len(clip.expression)
    assert start == len(train)
    with pytest.raises(ValueError, match="clip 's/1' is already in the corpus"):
        again.write_part([make_clip("s/1", 2, 9)])


def test_a_failed_part_leaves_nothing_and_stale_staging_is_ignored(tmp_path):
    root = tmp_path / "c"
    writer(root).write_part([make_clip("a/1", 3, 0)])

    def clips_then_crash():
        yield make_clip("b/1", 4, 1)
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        writer(root).write_part(clips_then_crash())
    assert sorted(os.listdir(root)) == sorted([CORPUS_JSON, "part-00000"])
    # A killed writer's staging directory: readers ignore it, the next writer removes it.
    stale = root / "incomplete.deadbeef_1.0.0" / "pseudo_video" / "1.0.0"
    stale.mkdir(parents=True)
    (stale / "dataset_info.json").write_text("{}")
    assert [c["clip_id"] for c in open_pseudo_video(root).clips["train"]] == ["a/1"]
    writer(root).write_part([make_clip("b/1", 4, 1)])
    assert sorted(os.listdir(root)) == sorted([CORPUS_JSON, "part-00000", "part-00001"])
    assert open_pseudo_video(root).num_frames("train") + \
        open_pseudo_video(root).num_frames("validation") == 7


@pytest.mark.parametrize("clip, message", [
    (make_clip("", 3, 0), "clip_id must be a non-empty string"),
    (PseudoClip("a/1", np.zeros((3, E + 1)), np.zeros((3, N)), np.zeros(3)),
     r"clip 'a/1': expression has shape \(3, 7\), expected \(3, 6\)"),
    (PseudoClip("a/1", np.zeros((3, E)), np.zeros((3, N - 1)), np.zeros(3)),
     r"clip 'a/1': audio has shape \(3, 319\), expected \(3, 320\)"),
    (make_clip("a/1", 3, 0, frame_index=np.array([0, 2, 2])),
     "clip 'a/1': frame_index must be strictly increasing"),
    (PseudoClip("a/1", np.full((2, E), np.nan), np.zeros((2, N)), np.zeros(2)),
     "clip 'a/1': expression holds NaN or Inf"),
    (PseudoClip("a/1", np.zeros((0, E)), np.zeros((0, N)), np.zeros(0)),
     "clip 'a/1' has no frames"),
    (make_clip("a/1", 3, 0, split="test"), "clip 'a/1': split must be one of"),
])
def test_bad_clips_are_rejected_by_name(tmp_path, clip, message):
    with pytest.raises(ValueError, match=message):
        writer(tmp_path / "c").write_part([clip])
    assert not [n for n in os.listdir(tmp_path / "c") if n != CORPUS_JSON]


def test_mismatched_corpus_metadata_is_rejected(tmp_path):
    root = tmp_path / "c"
    writer(root).write_part([make_clip("a/1", 3, 0)])
    with pytest.raises(ValueError, match="json: expression_dim is 6, this writer has 8"):
        writer(root, expression_dim=8)
    with pytest.raises(ValueError, match="subject_fingerprint is 'subject-sha', expected 'other'"):
        open_pseudo_video(root, subject_fingerprint="other")
    with pytest.raises(ValueError, match="not a pseudo-video corpus"):
        open_pseudo_video(tmp_path)
    with pytest.raises(ValueError, match="write_part got no clips"):
        writer(root).write_part([])
