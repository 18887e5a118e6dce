"""Layout helpers for key maps that turn a PyTorch state dict into Flax variables.

A key map reads tensors with `take` (so a checkpoint of the wrong architecture fails with a
one-line error naming the key), converts layouts with `conv_kernel` / `linear_kernel` /
`batch_norm`, and finally calls `check_all_used` so that no weight is silently dropped.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from metatalk_jax.errors import InputError

# BatchNorm's step counter carries no weight; no key map needs to consume it.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def strip_prefix(state_dict: Mapping[str, np.ndarray], prefix: str = "module.") -> dict:
    """Drops `prefix` from every key when every key has it (nn.DataParallel saves), else copies.

    Stripping only when all keys carry it keeps a legitimate submodule called `module` intact.
    """
    keys = list(state_dict)
    if keys and all(key.startswith(prefix) for key in keys):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv{1,2,3}d weight [O, I, *k] -> Flax nn.Conv kernel [*k, I, O].

    Both frameworks compute cross-correlation, so no spatial flip is needed.
    """
    w = np.asarray(w)
    if w.ndim < 3:
        raise InputError(f"conv weight must have 3 to 5 dims [O, I, *k], got shape {w.shape}")
    spatial = tuple(range(2, w.ndim))
    return np.ascontiguousarray(np.transpose(w, spatial + (1, 0)))


def conv_transpose_kernel(w: np.ndarray, *, transpose_kernel: bool = False) -> np.ndarray:
    """torch ConvTranspose{1,2,3}d weight [I, O, *k] -> Flax nn.ConvTranspose kernel.

    transpose_kernel=False (Flax's default): returns [*k, I, O] with the spatial axes flipped,
    because Flax then runs a plain correlation over the dilated input while torch applies the
    gradient of a convolution. transpose_kernel=True: returns [*k, O, I] unflipped (Flax flips
    and swaps the two channel axes itself). Either way the caller must translate padding with
    `conv_transpose_padding`.
    """
    w = np.asarray(w)
    if w.ndim < 3:
        raise InputError(f"transposed-conv weight must have 3 to 5 dims [I, O, *k], got {w.shape}")
    spatial = tuple(range(2, w.ndim))
    if transpose_kernel:
        return np.ascontiguousarray(np.transpose(w, spatial + (1, 0)))
    flipped = w[(slice(None), slice(None)) + (slice(None, None, -1),) * len(spatial)]
    return np.ascontiguousarray(np.transpose(flipped, spatial + (0, 1)))


def conv_transpose_padding(kernel_size: Sequence[int], padding, output_padding=0
                           ) -> list[tuple[int, int]]:
    """Flax nn.ConvTranspose explicit padding equal to torch's (padding, output_padding).

    kernel_size: one int per spatial dim, e.g. (3, 3); padding and output_padding: an int or one
    per dim. torch crops p from both ends of the full output and adds output_padding at the end,
    i.e. Flax pads the dilated input by (k-1-p, k-1-p+op) per dim.
    """
    ks = [int(k) for k in kernel_size]
    ps = np.broadcast_to(np.atleast_1d(padding), (len(ks),))
    ops = np.broadcast_to(np.atleast_1d(output_padding), (len(ks),))
    return [(k - 1 - int(p), k - 1 - int(p) + int(op)) for k, p, op in zip(ks, ps, ops)]


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch Linear weight [O, I] -> Flax nn.Dense kernel [I, O]."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise InputError(f"linear weight must be 2-D [O, I], got shape {w.shape}")
    return np.ascontiguousarray(w.T)


def take(state_dict: Mapping[str, np.ndarray], key: str, shape: Iterable[int] | None = None
         ) -> np.ndarray:
    """state_dict[key] as a numpy array, optionally checked against `shape`.

    Raises KeyError("missing key 'x' ...") or ValueError("'x' has shape ..., expected ...")
    in one line, so a checkpoint of another architecture is reported clearly.
    """
    if key not in state_dict:
        near = [k for k in state_dict if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0]]
        hint = f" (keys under that module: {', '.join(sorted(near)[:6])})" if near else ""
        raise KeyError(f"checkpoint has no key '{key}'{hint}")
    value = np.asarray(state_dict[key])
    if shape is not None:
        expected = tuple(int(n) for n in shape)
        if value.shape != expected:
            raise InputError(f"checkpoint key '{key}' has shape {value.shape}, expected {expected}")
    return value


def batch_norm(state_dict: Mapping[str, np.ndarray], prefix: str,
               features: int | None = None) -> tuple[dict, dict]:
    """({"scale", "bias"}, {"mean", "var"}) for a torch BatchNorm at `prefix` ('enc.1.' style,
    trailing dot included) from weight / bias / running_mean / running_var, each [C].

    The first dict goes under Flax "params", the second under "batch_stats".
    """
    shape = None if features is None else (features,)
    params = {"scale": take(state_dict, prefix + "weight", shape),
              "bias": take(state_dict, prefix + "bias", shape)}
    stats = {"mean": take(state_dict, prefix + "running_mean", shape),
             "var": take(state_dict, prefix + "running_var", shape)}
    n = params["scale"].shape
    for name, value in (("bias", params["bias"]), ("running_mean", stats["mean"]),
                        ("running_var", stats["var"])):
        if value.shape != n:
            raise InputError(f"checkpoint key '{prefix}{name}' has shape {value.shape}, "
                             f"expected {n} like '{prefix}weight'")
    return params, stats


def unused_keys(state_dict: Mapping[str, np.ndarray], used: Iterable[str]) -> list[str]:
    """Sorted keys of `state_dict` not in `used`, ignoring BatchNorm's num_batches_tracked."""
    used = set(used)
    return sorted(k for k in state_dict
                  if k not in used and not k.endswith(IGNORED_SUFFIXES))


def check_all_used(state_dict: Mapping[str, np.ndarray], used: Iterable[str],
                   what: str = "checkpoint") -> None:
    """Raises a one-line ValueError listing weight keys that a key map did not consume."""
    left = unused_keys(state_dict, used)
    if left:
        shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
        raise InputError(f"{what}: the key map left weights unused: {shown}")


class TrackedStateDict(dict):
    """A dict that records which keys were read, so a key map can call
    `check_all_used(sd, sd.used)` without listing keys twice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used: set[str] = set()

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.used.add(key)
        return value

    def unused(self) -> list[str]:
        return unused_keys(self, self.used)
