"""The converted checkpoint: a folder holding Flax variables made from a PyTorch .pth.

    OUT/meta.json      {"format": "metatalk_jax.converted", "version": 1, "model": "wav2lip",
                        "config": {...architecture...}, "source": {"file", "sha256"},
                        "shapes": {"params/enc/kernel": {"shape": [...], "dtype": "float32"}}}
    OUT/variables.npz  one array per leaf, named by its '/'-joined path in the variable tree

Why .npz and not an orbax checkpoint: these are small, fixed, read-only weight sets (Wav2Lip
~36M values) that are loaded whole on one host; a single npz keeps dtypes and bits exactly,
loads without starting JAX devices or orbax's async threads, and is read with
allow_pickle=False, so loading a converted file can never run code either. Training state still
uses orbax (metatalk_jax/train/checkpointing.py); `load_converted` output feeds a train state or
`model.apply` directly.

The folder is written under a temporary name beside OUT and renamed into place
(atomic_files.publishing_dir), so a reader sees either the old checkpoint or the complete new
one.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np

from metatalk_jax.atomic_files import current_umask, publishing_dir
from metatalk_jax.checksums import file_sha256
from metatalk_jax.errors import InputError, MissingInputError

FORMAT = "metatalk_jax.converted"
VERSION = 1
META_FILE = "meta.json"
ARRAYS_FILE = "variables.npz"


def flatten_variables(variables: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    """{"params": {"enc": {"kernel": a}}} -> {"params/enc/kernel": a} (numpy arrays)."""
    flat = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise ValueError(f"variable name {key!r} under '{prefix}' must be a non-empty str "
                             "without '/'")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_variables(value, path + "/"))
        else:
            array = np.asarray(value)
            if array.dtype == object:
                raise ValueError(f"variable '{path}' is not numeric ({type(value).__name__})")
            flat[path] = array
    return flat


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict:
    """The inverse of flatten_variables: nested plain dicts."""
    tree: dict = {}
    for path, array in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = array
    return tree


def _meta(model: str, flat: Mapping[str, np.ndarray], config: dict, source) -> dict:
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the {model} architecture config is not JSON data: {error}") from None
    source = os.fspath(source)
    return {"format": FORMAT, "version": VERSION, "model": model, "config": config,
            "source": {"file": os.path.basename(source), "sha256": file_sha256(source)},
            "shapes": {path: {"shape": list(a.shape), "dtype": str(a.dtype)}
                       for path, a in flat.items()}}


def _is_converted_dir(path: str) -> bool:
    try:
        with open(os.path.join(path, META_FILE)) as f:
            return json.load(f).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_converted(out_path, model: str, variables: Mapping, config: dict, source) -> str:
    """Writes the converted checkpoint folder `out_path` atomically; returns its path.

    variables: nested mapping of arrays (e.g. {"params": ..., "batch_stats": ...}).
    config: the architecture settings as JSON data. source: the .pth file it came from (its
    name and sha256 are recorded). An existing converted checkpoint at `out_path` is replaced;
    anything else there is left alone and reported.
    """
    out_path = os.fspath(out_path).rstrip(os.sep) or os.sep
    if os.path.lexists(out_path) and not _is_converted_dir(out_path):
        raise InputError(f"{out_path}: exists and is not a converted checkpoint; not replacing it")
    flat = flatten_variables(variables)
    if not flat:
        raise ValueError(f"{out_path}: no variables to save for '{model}'")
    meta = _meta(model, flat, config, source)
    with publishing_dir(out_path, replace=True, temp_prefix=".tmp-converted-") as tmp:
        np.savez(os.path.join(tmp, ARRAYS_FILE), **flat)
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write("\n")
        for name in (ARRAYS_FILE, META_FILE):
            os.chmod(os.path.join(tmp, name), 0o666 & ~current_umask())
    return out_path


def load_converted(path, model: str) -> tuple[dict, dict]:
    """(variables as nested dicts of numpy arrays, meta) from a converted checkpoint folder.

    Raises a one-line InputError naming the folder when it is missing, is not a converted
    checkpoint, holds another model's weights, or its arrays disagree with meta.json.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise InputError(f"{path}: no converted checkpoint folder there")
    meta_path = os.path.join(path, META_FILE)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        raise InputError(f"{path}: not a converted checkpoint (no readable {META_FILE}); "
                         "make one with `python -m metatalk_jax.convert`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a converted checkpoint ({META_FILE} has no "
                         f"format '{FORMAT}')")
    if meta.get("version") != VERSION:
        raise InputError(f"{path}: converted checkpoint version {meta.get('version')!r}, "
                         f"this code reads version {VERSION}")
    if meta.get("model") != model:
        raise InputError(f"{path}: holds a {meta.get('model')!r} checkpoint, expected {model!r}")
    try:
        with np.load(os.path.join(path, ARRAYS_FILE), allow_pickle=False) as arrays:
            flat = {name: arrays[name] for name in arrays.files}
    except Exception as error:  # a damaged npz raises zipfile, OSError or ValueError
        raise InputError(f"{path}: unreadable {ARRAYS_FILE}: "
                         f"{' '.join(str(error).split())}") from None
    shapes = meta.get("shapes")
    if not isinstance(shapes, dict):
        raise InputError(f"{path}: {META_FILE} has no 'shapes' table")
    if set(shapes) != set(flat):
        missing = sorted(set(shapes) ^ set(flat))[:4]
        raise InputError(f"{path}: {ARRAYS_FILE} and {META_FILE} list different variables "
                         f"(e.g. {', '.join(missing)})")
    for name, array in flat.items():
        if list(array.shape) != shapes[name]["shape"] or str(array.dtype) != shapes[name]["dtype"]:
            raise InputError(f"{path}: variable '{name}' is {array.dtype}{list(array.shape)}, "
                             f"{META_FILE} says {shapes[name]['dtype']}{shapes[name]['shape']}")
    return unflatten_variables(flat), meta


def load_weights(path, model: str, convert, what: str) -> dict:
    """The Flax variables of `model` from either form a user may hold: a converted folder
    (`python -m metatalk_jax.convert MODEL IN OUT`) or the original PyTorch file, read without
    torch and mapped by `convert` (the model's key map, state dict -> (variables, config)).

    what: the model's name in messages ("Wav2Lip"). A missing path is a MissingInputError (a
    FileNotFoundError); a file that is not this model's checkpoint (corrupt, unsafe, another
    architecture) is one InputError line naming the file and the first problem.
    """
    from metatalk_jax.convert import torch_pickle

    path = os.fspath(path)
    if os.path.isdir(path):
        return load_converted(path, model)[0]
    if not os.path.isfile(path):
        raise MissingInputError(f"{path}: no {what} checkpoint (a PyTorch file or a folder "
                                f"written by `python -m metatalk_jax.convert {model}`)")
    try:
        variables, _ = convert(torch_pickle.read_state_dict(path))
    except (KeyError, InputError) as error:
        # The key map's KeyError is a key the file lacks. str(KeyError) adds quotes, so its
        # message is args[0]; the reader's own messages already start with the path.
        reason = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        reason = reason.removeprefix(f"{path}: ").splitlines()[0] or type(error).__name__
        raise InputError(f"{path}: not a usable {what} checkpoint ({reason})") from None
    return variables
