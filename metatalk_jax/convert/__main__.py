"""Converts a PyTorch checkpoint into a converted Flax checkpoint folder, without torch.

    python -m metatalk_jax.convert MODEL IN.pth OUT [--key-map package.module:function]

Prints one summary line and exits 0; on bad input (errors.InputError) prints one `error: ...`
line on stderr and exits 2; any other failure keeps its traceback (exit 1). The .pth is read
with the restricted unpickler (torch_pickle), so a file that would run code is refused before
anything in it runs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from metatalk_jax import runtime
from metatalk_jax.convert import converted, registry, torch_layouts, torch_pickle
from metatalk_jax.errors import InputError


def convert_file(model: str, in_path, out_path, key_map: str | None = None) -> dict:
    """Reads `in_path`, maps it with `model`'s key map (or `key_map`, "module:function"), and
    writes the converted folder `out_path`. Returns {"tensors", "values", "out"} for the summary.

    A DataParallel "module." prefix on every key is dropped before the key map sees the keys.
    """
    convert = registry.load_key_map(key_map) if key_map else registry.key_map_for(model)
    state_dict = torch_layouts.strip_prefix(torch_pickle.read_state_dict(in_path))
    try:
        variables, config = convert(state_dict)
    # The key map looks keys up in the user's state dict (KeyError: a key it lacks) and checks
    # their shapes (InputError); a bare ValueError from it is a bug and keeps its traceback.
    except KeyError as error:  # str(KeyError) adds quotes; the message is the first argument
        raise InputError(f"{in_path}: not a {model} checkpoint: {error.args[0]}") from None
    except InputError as error:
        raise InputError(f"{in_path}: not a {model} checkpoint: {error}") from None
    converted.save_converted(out_path, model, variables, config, in_path)
    flat = converted.flatten_variables(variables)
    return {"tensors": len(flat), "values": int(sum(np.size(a) for a in flat.values())),
            "out": str(out_path)}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as the single line `error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    runtime.start()
    parser = OneLineErrorParser(
        prog="python -m metatalk_jax.convert",
        description="Convert a PyTorch .pth into a Flax checkpoint folder (no torch needed). "
                    f"Known models: {', '.join(registry.known_models())}.")
    parser.add_argument("model", help="model name (a registered key map, or any name with "
                                      "--key-map)")
    parser.add_argument("checkpoint", help="the PyTorch .pth file")
    parser.add_argument("out", help="output folder (meta.json + variables.npz)")
    parser.add_argument("--key-map", default=None,
                        help="use this 'package.module:function' key map instead of the "
                             "registered one")
    args = parser.parse_args(argv)
    try:
        summary = convert_file(args.model, args.checkpoint, args.out, args.key_map)
    except InputError as error:  # UnsafeCheckpointError is an InputError too
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"converted {args.model}: {summary['tensors']} arrays, {summary['values']:,} values, "
          f"{args.checkpoint} -> {summary['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
