"""Bucket work dirs (gs://) against a GCS emulator on loopback (tests/support/gcs_emulator.py),
through the client libraries production uses (gcsfs via etils.epath, tensorstore via orbax):

- the training loop writes checkpoints, config.json, metrics.jsonl, TensorBoard events and
  previews into the bucket, nothing locally, resumes from it; `read_state` and inference's
  checkpoint reader (infer --a2e/--renderer gs://...) read the bucket checkpoint, whose
  parameters equal a NumPy SGD of the same batches;
- metrics.jsonl continues across a resumed writer; TensorBoard's own reader
  (EventAccumulator) reads the scalars and images from the bucket;
- a subject tree uploaded to the bucket is staged into a host's cache and is byte-identical.
~30 s on 2 cores (emulator start, a few hundred small HTTP requests).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from metatalk_jax.inference.trained_models import CheckpointError, locate_checkpoint, read_parts
from metatalk_jax.train import loop, staging, workdir
from metatalk_jax.train.checkpointing import Checkpoints, complete_steps, read_state
from metatalk_jax.train.metric_writers import MetricWriter
from tests.support.gcs_emulator import running_emulator
from tests.test_engine_loop import LeastSquares, config_for, numpy_sgd
from tests.support.train_runs import REPO


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    data = tmp_path_factory.mktemp("gcs") / "data"
    data.mkdir()
    with running_emulator(str(data)) as url:
        yield url


def read_lines(url) -> list[dict]:
    return [json.loads(line) for line in workdir.read_bytes(url).decode().splitlines()
            if line.strip()]


def test_training_loop_writes_and_resumes_in_the_bucket(bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)              # a wrong os.path.abspath would land in here
    run = f"{bucket}/least_squares"
    config = config_for(6, checkpoint_every_steps=3, keep_checkpoints=2, log_every_steps=2,
                        task="least_squares")
    first = loop.train_and_evaluate(config, run, task=LeastSquares(), log=lambda *_: None)
    assert first.status == "finished"
    second = loop.train_and_evaluate(config_for(10, checkpoint_every_steps=3, log_every_steps=2,
                                                task="least_squares"),
                                     run, task=LeastSquares(), log=print)
    assert second.step == 10
    assert os.listdir(tmp_path) == []        # nothing written locally (no `gs:` folder)
    steps = Checkpoints(run, every_steps=3, keep=2).all_steps()
    assert steps[-1] == 10 and set(steps) <= {3, 6, 9, 10}
    state = read_state(f"{run}/checkpoints/10")
    np.testing.assert_allclose(state["w"], numpy_sgd(10), rtol=1e-5, atol=1e-6)
    assert json.loads(workdir.read_bytes(f"{run}/config.json"))["total_steps"] == 10
    logged = [r["step"] for r in read_lines(f"{run}/metrics.jsonl")]
    assert logged == [2, 4, 6, 8, 10]        # the resumed run continued the same file
    # what infer does with --a2e/--renderer gs://...: the newest step, the run's config, one part
    located = locate_checkpoint(run, "least_squares")
    assert (located.step, located.step_dir) == (10, f"{run}/checkpoints/10")
    w = read_parts(located.step_dir, ("w",))["w"]
    np.testing.assert_allclose(w, numpy_sgd(10), rtol=1e-5, atol=1e-6)
    assert locate_checkpoint(f"{run}/checkpoints/6/", "least_squares").step == 6
    with pytest.raises(CheckpointError, match="not 'renderer'"):
        locate_checkpoint(run, "renderer")
    # A save that a killed host left half-written (objects under 12/, no commit marker) is
    # not the newest checkpoint.
    workdir.write_bytes(f"{run}/checkpoints/12/state/partial", b"half")
    assert locate_checkpoint(run, "least_squares").step == 10


def test_a_reader_sees_what_another_process_wrote_after_it_listed(bucket):
    """gcsfs answers from folder listings it cached: without dropping them, a process that
    listed checkpoints/ never sees a step another host saved later (the restarted pod's final
    checkpoint looked absent to the test that read it)."""
    run = f"{bucket}/listing"
    workdir.write_bytes(f"{run}/checkpoints/2/state/x", b"2")
    assert [p.name for p in workdir.epath_of(f"{run}/checkpoints").iterdir()] == ["2"]
    other_host = ("import sys; from metatalk_jax.train import workdir; "
                  "workdir.write_bytes(sys.argv[1], b'6')")
    subprocess.run([sys.executable, "-c", other_host, f"{run}/checkpoints/6/state/x"],
                   check=True, cwd=REPO, env=os.environ)
    assert workdir.exists(f"{run}/checkpoints/6/state")
    assert workdir.read_bytes(f"{run}/checkpoints/6/state/x") == b"6"


def test_metrics_events_and_previews_in_the_bucket(bucket):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = f"{bucket}/writer"
    image = (np.arange(6 * 5 * 3) % 256).astype(np.uint8).reshape(6, 5, 3)
    with MetricWriter(run) as writer:
        writer.write_scalars(1, {"loss": 0.5})
        writer.write_images(1, {"preview": image})
        # flushed on every call: a reader sees it while the run goes on
        assert [r["loss"] for r in read_lines(f"{run}/metrics.jsonl")] == [0.5]
    with MetricWriter(run) as writer:        # a resumed run, as on a new host
        writer.write_scalars(2, {"loss": 0.25})
    assert [(r["step"], r["loss"]) for r in read_lines(f"{run}/metrics.jsonl")] == [
        (1, 0.5), (2, 0.25)]
    assert workdir.exists(f"{run}/previews/preview_0000001.png")
    events = EventAccumulator(f"{run}/tensorboard", size_guidance={"images": 0})
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    (stored,) = events.Images("preview")
    assert (stored.width, stored.height) == (5, 6)


def test_subject_tree_staged_from_the_bucket(bucket, tmp_path):
    source = tmp_path / "subject"
    (source / "tfds" / "1.0.0").mkdir(parents=True)
    files = {"subject.json": b'{"version": 3}',
             "tfds/1.0.0/shard-0.array_record": bytes(range(256)) * 40,
             "coefficients.npz": os.urandom(3000)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    url = f"{bucket}/subjects/s1"
    assert staging.main([str(source), url]) == 0
    assert staging.listing(url) == sorted((n, len(d)) for n, d in files.items())
    local = staging.staged_copy(url, cache_root=str(tmp_path / "host_a"))
    for name, data in files.items():
        assert (tmp_path / "host_a" / local / name).read_bytes() == data
    mtime = os.path.getmtime(local)
    assert staging.staged_copy(url, cache_root=str(tmp_path / "host_a")) == local
    assert os.path.getmtime(local) == mtime                    # staged once per host
    assert staging.main([f"{bucket}/no/such/subject", str(tmp_path / "x")]) == 2


def test_reading_a_run_logs_no_orbax_warnings(tmp_path, caplog):
    """infer (locate_checkpoint) lists a run's complete steps through a read-only orbax manager,
    which warns through absl about the options it adjusts; a normal run prints no third-party
    warnings."""
    (tmp_path / "checkpoints").mkdir()
    with caplog.at_level(logging.WARNING):
        assert complete_steps(str(tmp_path)) == []
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
