"""Loading ml_collections configs given as `path/to/config.py[:arg]`, with `key=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import os


def load_config(spec: str, overrides=()):
    """Imports the config file, calls `get_config(arg)` and applies `a.b=value` overrides.

    Values are parsed as Python literals when possible (numbers, booleans, tuples), else kept as
    strings. A missing file or an unknown key is a ValueError naming it.
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: config file not found")
    module_spec = importlib.util.spec_from_file_location("_metatalk_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"config override {item!r} is not key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ValueError(f"{path}: config has no key {key!r}")
        node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], (int, float)) and not isinstance(node[leaf], bool) else value
    return config


def config_overrides(parser, rest) -> list[str]:
    """`--config.a.b=value` arguments left over by argparse -> ["a.b=value", ...]; anything
    else is a usage error (argparse exits with status 2)."""
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unknown argument {item!r}")
        overrides.append(item[len("--config."):])
    return overrides
