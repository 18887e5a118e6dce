"""Runs a multi-process JAX program on this machine's CPU, as a multi-host run would.

    python launch/local.py --num_processes 2 --devices_per_process 2 [--port P] [--timeout S] \\
        -- -m metatalk_jax.train --config configs/renderer.py:tiny --workdir /tmp/run
    python launch/local.py --num_processes 2 -- path/to/script.py --flag value

Each of the N processes gets JAX_PLATFORMS=cpu, D forced host devices
(--xla_force_host_platform_device_count=D, also JAX_NUM_CPU_DEVICES=D), gloo cross-process CPU
collectives (JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo; the default in jax 0.10 but named so an
older or differently configured jax does not silently run without cross-process collectives),
and `--coordinator 127.0.0.1:P --num_processes N --process_id I` appended to its arguments; the
program is expected to pass them to jax.distributed.initialize.

Output lines are prefixed with [p0], [p1], ... The launcher waits for all processes; as soon as
one exits non-zero the others are terminated (a peer blocked in a collective would otherwise wait
for ever) and the launcher exits with that status (128 + signal number for a process killed by a
signal, 124 on --timeout). SIGINT and SIGTERM sent to the launcher are forwarded to every process;
a second one kills them; if every process then exits 0 (a trainer that saved a checkpoint on
SIGTERM), the launcher still exits with 128 + the signal number, as an interrupted command does.
Each process runs in its own session, so a terminal's Ctrl-C reaches them once, through the launcher
(a SIGKILLed launcher cannot forward anything and leaves them running).

As a library:  run_local(["-m", "pkg.mod", "--flag"], num_processes=2, devices_per_process=2)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

TIMEOUT_STATUS = 124  # what coreutils `timeout` returns
# Between SIGTERM and SIGKILL when stopping the remaining processes. jax.distributed installs
# a SIGTERM preemption notifier, so a JAX process does not die on SIGTERM by itself.
GRACE_SECONDS = 5.0


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_environment(devices_per_process: int, extra: dict | None = None) -> dict:
    """This process's environment plus `extra`, set up for D CPU devices per process.

    An inherited --xla_force_host_platform_device_count (pytest's conftest sets 8) is replaced,
    not duplicated, since XLA would take the last one but a reader of the logs should not have
    to know that.
    """
    env = dict(os.environ)
    env.update(extra or {})
    xla_flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "",
                       env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = " ".join(
        xla_flags.split() + [f"--xla_force_host_platform_device_count={devices_per_process}"])
    env["JAX_NUM_CPU_DEVICES"] = str(devices_per_process)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
    env["PYTHONUNBUFFERED"] = "1"  # so prefixed lines appear as they are printed
    return env


def process_command(program: list[str], coordinator: str, num_processes: int,
                    process_id: int) -> list[str]:
    """`python -m mod args...` or `python script.py args...` plus the distributed flags."""
    if not program:
        raise ValueError("nothing to run: give `-m module [args]` or `script.py [args]`")
    if program[0] == "-m" and len(program) < 2:
        raise ValueError("-m needs a module name")
    return [sys.executable, *program, "--coordinator", coordinator,
            "--num_processes", str(num_processes), "--process_id", str(process_id)]


def exit_status(returncode: int) -> int:
    """Popen's -N (killed by signal N) as the shell's 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _copy_prefixed(pipe, prefix: str, stream, lock: threading.Lock) -> None:
    for line in iter(pipe.readline, b""):
        text = line.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            stream.write(f"{prefix}{text}\n")
            stream.flush()
    pipe.close()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signals the process's whole group (it leads one), so its own children stop as well."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _stop(processes: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM to every running process, SIGKILL to those still alive after grace_seconds."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()


def run_local(argv_module_and_args: list[str], num_processes: int, devices_per_process: int = 1,
              port: int | None = None, env: dict | None = None, timeout: float | None = None,
              stream=None, grace_seconds: float = GRACE_SECONDS) -> int:
    """Starts the processes, relays their output, returns the launcher's exit status.

    argv_module_and_args: ["-m", "module", args...] or ["script.py", args...].
    env: variables added to (overriding) this process's environment.
    timeout: seconds before all processes are stopped and TIMEOUT_STATUS returned.
    stream: where the prefixed output goes (default sys.stdout).
    grace_seconds: how long processes may take to exit after SIGTERM before SIGKILL, when a
      peer failed or on timeout.
    """
    if num_processes < 1 or devices_per_process < 1:
        raise ValueError("num_processes and devices_per_process must be >= 1")
    stream = stream if stream is not None else sys.stdout
    coordinator = f"127.0.0.1:{port if port is not None else free_port()}"
    child_env = process_environment(devices_per_process, env)
    commands = [process_command(list(argv_module_and_args), coordinator, num_processes, i)
                for i in range(num_processes)]

    processes: list[subprocess.Popen] = []
    forwarded: list[int] = []

    def forward(signum, _frame):
        # The first signal is passed on (a JAX trainer may catch it to save a checkpoint and
        # exit); a second one means "stop now".
        forwarded.append(signum)
        for process in processes:
            if process.poll() is None:
                _signal_group(process, signum if len(forwarded) == 1 else signal.SIGKILL)

    # Signal handlers can only be installed from the main thread; a library caller in another
    # thread keeps its own handling.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)

    lock = threading.Lock()
    relays = []
    try:
        for i, command in enumerate(commands):
            process = subprocess.Popen(command, env=child_env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
            processes.append(process)
            relay = threading.Thread(target=_copy_prefixed, daemon=True,
                                     args=(process.stdout, f"[p{i}] ", stream, lock))
            relay.start()
            relays.append(relay)
        status = _wait(processes, timeout)
    finally:
        _stop(processes, grace_seconds)
        for relay in relays:
            relay.join(timeout=grace_seconds)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if status == 0 and forwarded:
        status = 128 + forwarded[0]  # every process caught the signal and exited cleanly
    return status


def _wait(processes: list[subprocess.Popen], timeout: float | None) -> int:
    """0 when all exit 0; else the status of the first process seen failing (or a timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        codes = [process.poll() for process in processes]
        for code in codes:
            if code not in (None, 0):
                return exit_status(code)
        if all(code == 0 for code in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            return TIMEOUT_STATUS
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: local.py [options] -- (-m module | script.py) [program args...]",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(
        description="Run N local CPU processes of a jax.distributed program.",
        usage="%(prog)s [options] -- (-m module | script.py) [program args...]")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--port", type=int, default=None,
                        help="coordinator port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default: none)")
    options = parser.parse_args(argv[:split])
    return run_local(argv[split + 1:], options.num_processes, options.devices_per_process,
                     port=options.port, timeout=options.timeout)


if __name__ == "__main__":
    sys.exit(main())
