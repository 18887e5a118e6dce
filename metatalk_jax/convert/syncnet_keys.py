"""Key map from syncnet_python's syncnet_v2.model to the Flax SyncNet of
metatalk_jax.models.syncnet, and a loader for the evaluation code.

syncnet_v2.model is a bare state dict of class S (SyncNetModel.py), saved by an old torch in the
legacy (non-zip) format, which convert.torch_pickle reads without torch. Per key (T = netcnnaud /
netcnnlip at Sequential index i, H = netfcaud / netfclip):
  T.i.weight [O,I,*k]  -> params/T/i/kernel [*k,I,O]     (Conv2d for audio, Conv3d for lips)
  T.i.bias             -> params/T/i/bias
  T.(i+1).{weight,bias}               -> params/T/(i+1)/{scale,bias}
  T.(i+1).{running_mean,running_var}  -> batch_stats/T/(i+1)/{mean,var}
  H.0 / H.3 .weight [O,I] -> params/H/0 / 3 /kernel [I,O]; H.1 is the BatchNorm1d (as above)
num_batches_tracked is ignored; any other key left over, or a missing one, is an error.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from metatalk_jax.convert import torch_layouts
from metatalk_jax.models import syncnet as sn

MODEL_NAME = "syncnet"


def syncnet_config() -> dict:
    """The config stored beside converted weights (JSON data)."""
    return {"model": MODEL_NAME, "embedding_size": sn.EMBEDDING_SIZE, "lip_frames": sn.LIP_FRAMES,
            "lip_size": sn.LIP_SIZE, "mfcc_cepstra": sn.MFCC_CEPSTRA,
            "mfcc_columns": sn.MFCC_COLUMNS, "channel_order": "BGR", "pixel_range": [0, 255],
            "parameters": sn.REFERENCE_PARAMETER_COUNT}


def _f32(value) -> np.ndarray:
    return np.asarray(value, np.float32)


def convert_syncnet(state_dict: Mapping) -> tuple[dict, dict]:
    """syncnet_v2 state dict -> ({"params", "batch_stats"}, config).

    Accepts a bare state dict (as syncnet_v2.model is) or one under a "state_dict" entry, with
    or without a DataParallel "module." prefix. A missing key or wrong shape raises a one-line
    KeyError / ValueError naming the key; weights left unused raise ValueError.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    sd = torch_layouts.TrackedStateDict(torch_layouts.strip_prefix(dict(state_dict), "module."))
    params: dict = {}
    stats: dict = {}
    for trunk_name, trunk in sn.TRUNKS.items():
        params[trunk_name], stats[trunk_name] = {}, {}
        for layer in trunk:
            conv = f"{trunk_name}.{layer.index}."
            weight = torch_layouts.take(sd, conv + "weight", (layer.cout, layer.cin) + layer.kernel)
            params[trunk_name][str(layer.index)] = {
                "kernel": _f32(torch_layouts.conv_kernel(weight)),
                "bias": _f32(torch_layouts.take(sd, conv + "bias", (layer.cout,)))}
            bn_index = str(layer.index + 1)
            bn_params, bn_stats = torch_layouts.batch_norm(sd, f"{trunk_name}.{bn_index}.",
                                                           layer.cout)
            params[trunk_name][bn_index] = {k: _f32(v) for k, v in bn_params.items()}
            stats[trunk_name][bn_index] = {k: _f32(v) for k, v in bn_stats.items()}
    for head in sn.HEADS:
        params[head], stats[head] = {}, {}
        for index, fan_in, fan_out in sn.HEAD_LAYERS:
            key = f"{head}.{index}."
            weight = torch_layouts.take(sd, key + "weight", (fan_out, fan_in))
            params[head][str(index)] = {"kernel": _f32(torch_layouts.linear_kernel(weight)),
                                        "bias": _f32(torch_layouts.take(sd, key + "bias",
                                                                        (fan_out,)))}
        first_out = sn.HEAD_LAYERS[0][2]
        bn_params, bn_stats = torch_layouts.batch_norm(sd, f"{head}.1.", first_out)
        params[head]["1"] = {k: _f32(v) for k, v in bn_params.items()}
        stats[head]["1"] = {k: _f32(v) for k, v in bn_stats.items()}
    torch_layouts.check_all_used(sd, sd.used, "syncnet checkpoint")
    return {"params": params, "batch_stats": stats}, syncnet_config()


def load_syncnet(path) -> tuple[sn.SyncNet, dict]:
    """(model, variables) for `model.apply(variables, x, method=SyncNet.forward_lip)` etc.

    `path`: a converted checkpoint folder (`python -m metatalk_jax.convert syncnet
    syncnet_v2.model OUT`) or the syncnet_v2.model / .pth file itself (read without torch).
    A missing path or a checkpoint of another model raises a one-line error naming the path.
    """
    from metatalk_jax.convert.converted import load_weights

    variables = load_weights(path, MODEL_NAME, convert_syncnet, "SyncNet")
    return sn.SyncNet(), variables
