"""launch/local.py: real multi-process JAX on the CPU (2 processes x 2 devices, gloo), failure
propagation, timeout and signal forwarding, checked with tests/support/distributed_probe.py."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(REPO, "tests", "support", "distributed_probe.py")
LAUNCHER = os.path.join(REPO, "launch", "local.py")


def load_launcher():
    """launch/ is scripts, not a package: import local.py by path."""
    spec = importlib.util.spec_from_file_location("launch_local", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


local = load_launcher()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for_files(paths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"probe files did not appear: {paths}")
        time.sleep(0.05)


def read_pid(path) -> int:
    with open(path) as f:
        return int(f.read())


def test_two_processes_compute_one_global_sum(tmp_path):
    output = io.StringIO()
    status = local.run_local([PROBE, "--mode", "sum", "--out_dir", str(tmp_path)],
                             num_processes=2, devices_per_process=2, timeout=120, stream=output)
    assert status == 0, output.getvalue()
    results = [json.loads((tmp_path / f"result_{i}.json").read_text()) for i in range(2)]
    rows = 4 * 2
    analytic = (rows * 3 - 1) * rows * 3 / 2  # sum of arange(24)
    for i, result in enumerate(results):
        assert result == {"process_index": i, "process_count": 2, "device_count": 4,
                          "local_device_count": 2, "sum": analytic}
    lines = output.getvalue().splitlines()
    assert "[p0] probe sum process 0 of 2" in lines and "[p1] probe sum process 1 of 2" in lines
    assert f"[p1] probe sum {analytic}" in lines


def test_a_crashed_process_stops_the_others(tmp_path):
    """Process 1 crashes with status 7 while process 0 hangs (as in a collective whose peer
    died): the launcher returns 7 at once and process 0 no longer exists."""
    start = time.monotonic()
    status = local.run_local([PROBE, "--mode", "fail", "--fail_process", "1", "--fail_code", "7",
                              "--out_dir", str(tmp_path)],
                             num_processes=2, devices_per_process=2, timeout=120,
                             stream=io.StringIO(), grace_seconds=2.0)
    elapsed = time.monotonic() - start
    assert status == 7
    survivor = read_pid(tmp_path / "pid_0")
    assert not alive(survivor)
    assert elapsed < 40  # the probe would sleep 300 s if it were not stopped


def test_timeout_stops_every_process(tmp_path):
    start = time.monotonic()
    status = local.run_local([PROBE, "--mode", "sleep", "--out_dir", str(tmp_path)],
                             num_processes=2, devices_per_process=1, timeout=3.0,
                             stream=io.StringIO(), grace_seconds=2.0)
    assert status == local.TIMEOUT_STATUS
    assert time.monotonic() - start < 20
    pids = [read_pid(tmp_path / f"pid_{i}") for i in range(2)]
    assert not any(alive(pid) for pid in pids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_launcher_forwards_signals(tmp_path, signum):
    """The command-line launcher passes SIGTERM/SIGINT on; the processes die of it and the
    launcher reports 128 + the signal number."""
    launcher = subprocess.Popen(
        [sys.executable, LAUNCHER, "--num_processes", "2", "--timeout", "120", "--",
         PROBE, "--mode", "sleep", "--out_dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid_files = [tmp_path / f"pid_{i}" for i in range(2)]
        wait_for_files(pid_files, timeout=30)
        pids = [read_pid(path) for path in pid_files]
        launcher.send_signal(signum)
        output, _ = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 128 + signum, output
    assert not any(alive(pid) for pid in pids)
    assert "[p0] probe sleep process 0 of 2" in output.splitlines()


def test_command_lines_and_environment():
    command = local.process_command(["-m", "metatalk_jax.train", "--workdir", "w"],
                                    "127.0.0.1:1234", 4, 3)
    assert command == [sys.executable, "-m", "metatalk_jax.train", "--workdir", "w",
                       "--coordinator", "127.0.0.1:1234", "--num_processes", "4",
                       "--process_id", "3"]
    with pytest.raises(ValueError):
        local.process_command([], "127.0.0.1:1", 1, 0)
    env = local.process_environment(3, {"XLA_FLAGS": "--a=1 "
                                        "--xla_force_host_platform_device_count=8 --b=2"})
    assert env["XLA_FLAGS"] == "--a=1 --b=2 --xla_force_host_platform_device_count=3"
    assert env["JAX_PLATFORMS"] == "cpu" and env["JAX_NUM_CPU_DEVICES"] == "3"
    assert env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"
    assert local.exit_status(-15) == 143 and local.exit_status(3) == 3


# ---------------------------------------------------------------------------------------------
# tpu_pod.sh and multi_gpu.sh, with gcloud and python replaced by recorders
# ---------------------------------------------------------------------------------------------

def make_recorder(path, log) -> str:
    """An executable that appends {"argv", "cwd"} as one JSON line to `log` and exits 0."""
    path.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    f"with open({str(log)!r}, 'a') as f:\n"
                    "    f.write(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd()}) + '\\n')\n")
    path.chmod(0o755)
    return str(path)


def read_log(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_script(script: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", os.path.join(REPO, "launch", script), *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=30)


TRAIN_ARGS = ["--config", "configs/renderer.py:tpu_pod", "--workdir", "gs://bucket/run 1",
              "--config.name=it's; $(rm -rf x) a b"]


def test_tpu_pod_runs_the_same_quoted_command_on_all_workers(tmp_path):
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    (home / "my repo").mkdir(parents=True)
    gcloud_log, python_log = tmp_path / "gcloud.jsonl", tmp_path / "python.jsonl"
    make_recorder(bin_dir / "gcloud", gcloud_log)
    python = make_recorder(tmp_path / "fake python", python_log)
    result = run_script("tpu_pod.sh", ["--setup", "--repo_dir", "my repo", "--", *TRAIN_ARGS],
                        {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TPU_NAME": "pod-v4-32",
                         "ZONE": "us-central2-b", "PROJECT": "proj", "PYTHON": python})
    assert result.returncode == 0, result.stderr
    calls = read_log(gcloud_log)
    assert len(calls) == 2  # setup, then training
    for call in calls:
        assert call["argv"][:-1] == ["compute", "tpus", "tpu-vm", "ssh", "pod-v4-32", "--zone",
                                     "us-central2-b", "--worker=all", "--project", "proj",
                                     "--command"]
    # What each worker's login shell would do with the two command strings:
    for call in calls:
        subprocess.run(["bash", "-c", call["argv"][-1]], cwd=home, check=True, timeout=30)
    setup_upgrade, setup_install, train = read_log(python_log)
    assert setup_upgrade["argv"] == ["-m", "pip", "install", "--upgrade", "pip"]
    assert setup_install["argv"][:5] == ["-m", "pip", "install", "-e", ".[gcs]"]
    assert "jax[tpu]" in setup_install["argv"]
    assert train["argv"] == ["-m", "metatalk_jax.train", "--distributed", "auto", *TRAIN_ARGS]
    assert train["cwd"] == str(home / "my repo")
    assert not (home / "my repo" / "x").exists() and "not a gs://" not in result.stderr


def test_tpu_pod_requires_its_settings(tmp_path):
    env = {"TPU_NAME": "", "ZONE": "z"}
    assert run_script("tpu_pod.sh", ["--", "--workdir", "gs://b/r"], env).returncode != 0
    assert run_script("tpu_pod.sh", ["--bogus"], {"TPU_NAME": "t", "ZONE": "z"}).returncode == 2


def test_multi_gpu_explicit_and_slurm(tmp_path):
    python_log = tmp_path / "python.jsonl"
    python = make_recorder(tmp_path / "fake python", python_log)
    train = ["--config", "configs/renderer.py:gpu", "--workdir", "/shared/run 1"]
    no_slurm = {key: "" for key in os.environ if key.startswith("SLURM_")}
    explicit = run_script("multi_gpu.sh", ["node0:1234", "4", "2", *train],
                          {**no_slurm, "PYTHON": python})
    assert explicit.returncode == 0, explicit.stderr
    slurm = run_script("multi_gpu.sh", train,
                       {"PYTHON": python, "SLURM_PROCID": "1", "SLURM_NTASKS": "3",
                        "SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_NODELIST": "gpu[07-09],big3",
                        "COORDINATOR_PORT": "5555"})
    assert slurm.returncode == 0, slurm.stderr
    first, second = read_log(python_log)
    assert first["argv"] == ["-m", "metatalk_jax.train", *train, "--coordinator", "node0:1234",
                             "--num_processes", "4", "--process_id", "2"]
    assert second["argv"] == ["-m", "metatalk_jax.train", *train, "--coordinator", "gpu07:5555",
                              "--num_processes", "3", "--process_id", "1"]
    bad_rank = run_script("multi_gpu.sh", ["node0:1234", "2", "2", *train], {"PYTHON": python})
    two_tasks_per_node = run_script("multi_gpu.sh", train, {
        "PYTHON": python, "SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[1-2]"})
    assert bad_rank.returncode == 2 and two_tasks_per_node.returncode == 2
    assert len(read_log(python_log)) == 2
