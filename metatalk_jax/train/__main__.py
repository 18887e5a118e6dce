"""Train a model: `python -m metatalk_jax.train --config configs/renderer.py[:variant] --workdir W`.

    python -m metatalk_jax.train --config configs/renderer.py --workdir runs/me \\
        --config.data.subject=subjects/me [--config.key=value ...]

Re-running the same command resumes from the work dir's latest checkpoint. Several processes
(TPU pod workers, GPU nodes; see launch/): `--coordinator HOST:PORT --num_processes N
--process_id I`, or `--distributed auto` where JAX can detect them (Cloud TPU, SLURM). Local CPU
processes (launch/local.py) use gloo collectives (JAX_CPU_COLLECTIVES_IMPLEMENTATION).
Exit status: 0 finished or preempted (a checkpoint was saved), 1 stopped on NaN/Inf, 2 bad input
(one `error:` line).
"""

from __future__ import annotations

import argparse
import os
import sys

from metatalk_jax.config_loading import config_overrides, load_config
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.runtime import enable_compilation_cache, use_xla_convolutions_on_cpu


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
    use_xla_convolutions_on_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file[:variant]")
    parser.add_argument("--workdir", required=True, help="checkpoints, metrics, previews")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument("--distributed", choices=("off", "auto"), default="off")
    parser.add_argument("--cpu_collectives", default=None, help="e.g. gloo (CPU multi-process)")
    args, rest = parser.parse_known_args(argv)
    overrides = config_overrides(parser, rest)
    if args.coordinator and (args.num_processes is None or args.process_id is None):
        parser.error("--coordinator needs --num_processes and --process_id")
    try:
        config = load_config(args.config, overrides)
    except (ValueError, OSError) as err:
        return report_bad_input(err)
    initialize_distributed(args)
    # grain's worker processes (config.data.workers > 0) read absl flags; this CLI has none.
    from absl import flags
    flags.FLAGS.mark_as_parsed()
    from metatalk_jax.train.loop import NonFiniteError, train_and_evaluate
    enable_compilation_cache()
    try:
        result = train_and_evaluate(config, args.workdir)
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:
        return report_bad_input(err)
    print(f"{result.status} at step {result.step}: {os.path.abspath(args.workdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
