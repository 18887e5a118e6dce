"""Train a model: `python -m metatalk_jax.train --config configs/renderer.py[:variant] --workdir W`.

    python -m metatalk_jax.train --config configs/renderer.py --workdir runs/me \\
        --config.data.subject=subjects/me [--config.key=value ...]

Re-running the same command resumes from the work dir's latest checkpoint. Several processes
(TPU pod workers, GPU nodes; see launch/): `--coordinator HOST:PORT --num_processes N
--process_id I`, or `--distributed auto` where JAX can detect them (Cloud TPU, SLURM). Local CPU
processes (launch/local.py) use gloo collectives (JAX_CPU_COLLECTIVES_IMPLEMENTATION).
Exit status: 0 finished or preempted (a checkpoint was saved), 1 stopped on NaN/Inf (one line)
or failed (a traceback), 2 bad input (one `error:` line). `--compile-only --topology v5e:4x4`
compiles the steps for a TPU topology on this machine instead of training and exits 1 when they
do not fit (train/compile_check.py).
"""

from __future__ import annotations

import argparse
import sys

from metatalk_jax import runtime
from metatalk_jax.config_loading import OVERRIDE_HELP, config_overrides, load_config
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.errors import InputError


def initialize_distributed(args) -> None:
    """jax.distributed.initialize for multi-process runs; each process then sees every
    device of the job in jax.devices() and loads its own slice of the data."""
    import jax
    if args.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
    if args.coordinator:
        jax.distributed.initialize(args.coordinator, int(args.num_processes),
                                   int(args.process_id))
    elif args.distributed == "auto":
        jax.distributed.initialize()


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog=OVERRIDE_HELP)
    parser.add_argument("--config", required=True, help="config file[:variant]")
    parser.add_argument("--workdir", default=None,
                        help="checkpoints, metrics, previews: a local path or a bucket URL "
                             "(gs://bucket/run); required unless --compile-only")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile the train and eval steps for --topology through libtpu "
                             "(no TPU needed), print per-chip memory, FLOPs and a roofline, exit "
                             "1 if they do not fit (train/compile_check.py)")
    parser.add_argument("--topology", default="",
                        help="TPU topology for --compile-only, e.g. v5e:4x4 (default: the "
                             "config's tpu_topology)")
    parser.add_argument("--min-headroom", type=float, default=0.0,
                        help="--compile-only: fraction of HBM that must stay free (e.g. 0.1)")
    parser.add_argument("--report-json", default=None, help="--compile-only: also write JSON")
    parser.add_argument("--train-step-only", action="store_true",
                        help="--compile-only: skip the eval step (it needs less memory; saves "
                             "a quarter of a full-size compile)")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument("--distributed", choices=("off", "auto"), default="off")
    parser.add_argument("--cpu_collectives", default=None, help="e.g. gloo (CPU multi-process)")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    if args.coordinator and (args.num_processes is None or args.process_id is None):
        parser.error("--coordinator needs --num_processes and --process_id")
    if not args.compile_only and not args.workdir:
        parser.error("--workdir is required (or --compile-only)")
    try:
        config = load_config(args.config, overrides)
    except InputError as err:
        return report_bad_input(err)
    if args.compile_only:
        from metatalk_jax.train.compile_check import main_compile_only
        try:
            return main_compile_only(config, args.config, args.topology,
                                     min_headroom=args.min_headroom, json_path=args.report_json,
                                     train_only=args.train_step_only)
        except InputError as err:
            return report_bad_input(err)
    initialize_distributed(args)
    # grain's worker processes (config.data.workers > 0) read absl flags; this CLI has none.
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from metatalk_jax.train import workdir as workdir_lib
    from metatalk_jax.train.loop import NonFiniteError, train_and_evaluate
    try:
        result = train_and_evaluate(config, args.workdir)
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except InputError as err:  # anything else is a bug or a machine failure: its traceback, 1
        return report_bad_input(err)
    print(f"{result.status} at step {result.step}: {workdir_lib.resolve(args.workdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
