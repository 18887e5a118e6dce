"""A pod run with its work dir and subject in a bucket (GCS emulator on loopback), launched as
documented (launch/multi_gpu.sh COORDINATOR NUM RANK, i.e. `python -m metatalk_jax.train ...
--coordinator ... --process_id I` on each host): 2 processes x 2 CPU devices, each "host" with
its own cache directory (hosts that share no disk), so each stages the subject from the bucket
and renders its own render cache on its own devices.

Both hosts are SIGKILLed mid-run and restarted as new hosts (fresh cache dirs, nothing local
kept): the run resumes from the bucket and ends with the parameters and per-step losses of an
uninterrupted run; TensorBoard's reader reads its events from the bucket.
Marked slow: three 2-process runs of the tiny renderer, ~4 min on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metatalk_jax.train import staging, workdir
from metatalk_jax.train.checkpointing import complete_steps
from tests.support.gcs_emulator import running_emulator
from tests.support.train_runs import MESH, REPO, TINY, max_relative_difference, flat_params

sys.path.insert(0, os.path.join(REPO, "launch"))
from local import free_port, process_environment  # noqa: E402

STEPS = ("total_steps=6", "checkpoint_every_steps=2", "keep_checkpoints=3")


def start_hosts(run, subject_url, host_dirs, log_dir):
    """The documented per-host command on each of len(host_dirs) 'hosts'; returns the Popens."""
    coordinator = f"127.0.0.1:{free_port()}"
    train = ["--config", TINY, "--workdir", run, f"--config.data.subject={subject_url}",
             *(f"--config.{o}" for o in (*MESH, *STEPS))]
    processes = []
    for rank, host in enumerate(host_dirs):
        env = process_environment(2, {"METATALK_CACHE": str(host), "PYTHON": sys.executable,
                                      "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"})
        log = open(os.path.join(log_dir, f"{os.path.basename(str(host))}.log"), "w")
        processes.append(subprocess.Popen(
            ["bash", os.path.join(REPO, "launch", "multi_gpu.sh"), coordinator,
             str(len(host_dirs)), str(rank), *train],
            stdout=log, stderr=subprocess.STDOUT, cwd=log_dir, env=env))
    return processes


def wait_all(processes, timeout=900):
    return [p.wait(timeout=timeout) for p in processes]


def losses(run) -> dict[int, float]:
    rows = [json.loads(line) for line in workdir.read_bytes(f"{run}/metrics.jsonl").decode()
            .splitlines() if line.strip()]
    return {r["step"]: r["g_total"] for r in rows if "g_total" in r}


def final_params(run):
    from metatalk_jax.train.checkpointing import read_state
    return flat_params(read_state(f"{run}/checkpoints/6"))


@pytest.mark.slow  # ~4 min on 2 cores: `make test-slow`
def test_bucket_pod_run_killed_and_restarted_on_fresh_hosts(carphone_subject, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    (tmp_path / "gcs").mkdir()
    with running_emulator(str(tmp_path / "gcs")) as bucket:
        subject_url = f"{bucket}/subjects/carphone"
        staging.copy_tree(str(carphone_subject[0]), subject_url)

        straight = f"{bucket}/runs/straight"
        hosts = [tmp_path / "straight_h0", tmp_path / "straight_h1"]
        assert wait_all(start_hosts(straight, subject_url, hosts, str(tmp_path))) == [0, 0]

        killed = f"{bucket}/runs/killed"
        first_hosts = [tmp_path / "first_h0", tmp_path / "first_h1"]
        processes = start_hosts(killed, subject_url, first_hosts, str(tmp_path))
        deadline = time.time() + 600
        # Killed once a complete checkpoint is in the bucket (a step directory alone may still
        # be mid-write: its commit marker comes last) and the run has gone on past it.
        while not (workdir.exists(f"{killed}/checkpoints") and complete_steps(killed)
                   and max(losses(killed), default=0) > complete_steps(killed)[0]):
            assert time.time() < deadline and all(p.poll() is None for p in processes)
            time.sleep(0.5)
        for p in processes:
            p.send_signal(signal.SIGKILL)
        assert wait_all(processes) == [-signal.SIGKILL] * 2
        saved = complete_steps(killed)
        assert saved and saved[-1] < 6

        new_hosts = [tmp_path / "new_h0", tmp_path / "new_h1"]     # nothing local kept
        assert wait_all(start_hosts(killed, subject_url, new_hosts, str(tmp_path))) == [0, 0]
        log = (tmp_path / "new_h0.log").read_text()
        assert f"resumed from {killed}/checkpoints step {saved[-1]}" in log, log[-3000:]

        difference = max_relative_difference(final_params(killed), final_params(straight))
        print(f"killed + restarted on new hosts vs straight: max relative difference "
              f"{difference:.2e}")
        assert difference <= 1e-6
        assert losses(killed) == pytest.approx(losses(straight), rel=1e-6)
        assert sorted(losses(killed)) == list(range(1, 7))
        events = EventAccumulator(f"{killed}/tensorboard")
        events.Reload()
        assert {e.step for e in events.Scalars("g_total")} == set(range(1, 7))

    # Each host staged the subject and rendered its cache in its own directory.
    for host in hosts + first_hosts + new_hosts:
        caches = [f for _, _, files in os.walk(host / "render_cache") for f in files]
        staged = [d for _, dirs, _ in os.walk(host / "staged") for d in dirs
                  if d.startswith("carphone-")]
        assert len([c for c in caches if c.endswith(".npy")]) == 1 and len(staged) == 1, host
    assert not (tmp_path / "gs:").exists()
