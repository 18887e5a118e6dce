"""A small multi-process JAX program for tests/test_launch_local.py (run through launch/local.py).

Modes (--mode):
  sum    jax.distributed with gloo CPU collectives; checks the device counts; builds one global
         [4*P, 3] array over a Mesh of all devices from per-process rows (process i holds rows
         4i..4i+3 of arange(12*P).reshape(4*P, 3)) and writes the jitted global sum, as seen by
         this process, to <out_dir>/result_<i>.json.
  fail   after jax.distributed.initialize, every process but --fail_process writes
         <out_dir>/pid_<i> and sleeps, like a peer stuck in a collective; --fail_process waits
         until those files exist (so the test knows whom to check) and exits with --fail_code
         without any clean-up (a crash).
  sleep  no JAX at all: write <out_dir>/pid_<i> and sleep (for timeout and signal tests).
"""

from __future__ import annotations

import argparse
import json
import os
import time

ROWS_PER_PROCESS = 4
SLEEP_SECONDS = 300


def write_pid(out_dir: str, process_id: int) -> None:
    path = os.path.join(out_dir, f"pid_{process_id}")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # the test polls for this file; never show it half-written


def initialize(args):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
    return jax


def global_sum(jax, args, devices_per_process: int) -> dict:
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    assert jax.process_count() == args.num_processes, jax.process_count()
    assert jax.process_index() == args.process_id, jax.process_index()
    assert jax.local_device_count() == devices_per_process, jax.local_devices()
    assert jax.device_count() == args.num_processes * devices_per_process, jax.devices()

    rows = ROWS_PER_PROCESS * args.num_processes
    full = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    local = full[ROWS_PER_PROCESS * args.process_id:ROWS_PER_PROCESS * (args.process_id + 1)]
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows_sharding = NamedSharding(mesh, PartitionSpec("data"))
    global_rows = jax.make_array_from_process_local_data(rows_sharding, local, full.shape)
    replicated = NamedSharding(mesh, PartitionSpec())
    total = jax.jit(jnp.sum, out_shardings=replicated)(global_rows)
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
            "sum": float(np.asarray(total.addressable_data(0)))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("sum", "fail", "sleep"), required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--devices_per_process", type=int, default=2)
    parser.add_argument("--fail_process", type=int, default=1)
    parser.add_argument("--fail_code", type=int, default=7)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--process_id", type=int, required=True)
    args = parser.parse_args()
    print(f"probe {args.mode} process {args.process_id} of {args.num_processes}")
    os.makedirs(args.out_dir, exist_ok=True)

    if args.mode == "sleep":
        write_pid(args.out_dir, args.process_id)
        time.sleep(SLEEP_SECONDS)
        return
    jax = initialize(args)
    if args.mode == "fail":
        if args.process_id == args.fail_process:
            peers = [os.path.join(args.out_dir, f"pid_{i}") for i in range(args.num_processes)
                     if i != args.process_id]
            deadline = time.monotonic() + 60
            while not all(map(os.path.exists, peers)) and time.monotonic() < deadline:
                time.sleep(0.02)
            # os._exit: a crash; a normal exit would run jax's shutdown barrier with the peers.
            os._exit(args.fail_code)
        write_pid(args.out_dir, args.process_id)
        time.sleep(SLEEP_SECONDS)
        return
    result = global_sum(jax, args, args.devices_per_process)
    with open(os.path.join(args.out_dir, f"result_{args.process_id}.json"), "w") as f:
        json.dump(result, f)
    print(f"probe sum {result['sum']}")


if __name__ == "__main__":
    main()
