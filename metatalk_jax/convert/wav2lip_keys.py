"""Key map from Wav2Lip's PyTorch checkpoints (wav2lip.pth, wav2lip_gan.pth) to the Flax generator
of metatalk_jax.models.wav2lip, and a loader for the stages that run Wav2Lip.

Both published checkpoints are `{"state_dict": {"module.<key>": tensor}, "optimizer": ...,
"global_step": ..., "global_epoch": ...}` saved from nn.DataParallel; the generator's keys are the
same in both (the GAN variant differs only in training). Per layer (module path P, e.g.
"face_encoder_blocks.1.0"; Flax name P with "_" for "."):
  P.conv_block.0.weight [O,I,k,k] -> params/P/conv/kernel [k,k,I,O]
      (ConvTranspose2d [I,O,k,k] -> [k,k,I,O] flipped in both spatial axes)
  P.conv_block.0.bias   -> params/P/conv/bias
  P.conv_block.1.{weight,bias} -> params/P/bn/{scale,bias}
  P.conv_block.1.{running_mean,running_var} -> batch_stats/P/bn/{mean,var}
  output_block.1.{weight,bias} (the plain final conv) -> params/output_block_1/conv/{kernel,bias}
num_batches_tracked is ignored; any other key left over is an error (wrong architecture).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from metatalk_jax.convert import torch_layouts
from metatalk_jax.models import wav2lip as w2l

MODEL_NAME = "wav2lip"


def wav2lip_config() -> dict:
    """The config stored beside converted weights (JSON-serialisable)."""
    return {"model": MODEL_NAME, "image_size": w2l.IMAGE_SIZE, "mel_bins": w2l.MEL_BINS,
            "mel_steps": w2l.MEL_STEPS, "channel_order": "BGR",
            "parameters": w2l.REFERENCE_PARAMETER_COUNT}


def generator_state_dict(checkpoint: Mapping) -> dict[str, np.ndarray]:
    """The generator's flat state_dict from what a .pth holds: a training checkpoint's
    "state_dict" entry (or keys flattened as "state_dict.<key>") or a bare state_dict; the
    DataParallel "module." prefix is removed."""
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], Mapping):
        flat = dict(checkpoint["state_dict"])
    elif any(k.startswith("state_dict.") for k in checkpoint):
        flat = {k[len("state_dict."):]: v for k, v in checkpoint.items()
                if k.startswith("state_dict.")}
    else:
        flat = dict(checkpoint)
    return torch_layouts.strip_prefix(flat, "module.")


def convert_wav2lip(state_dict: Mapping) -> tuple[dict, dict]:
    """Wav2Lip state_dict (or whole training checkpoint) -> ({"params", "batch_stats"}, config).

    Every key must be consumed and have the reference's shape; a mismatch raises a one-line
    KeyError/ValueError naming the key.
    """
    sd = torch_layouts.TrackedStateDict(generator_state_dict(state_dict))
    params, stats = {}, {}
    for path, spec in w2l.reference_layers():
        name = w2l.flax_name(path)
        k = spec.kernel
        if spec.batch_norm:
            conv_key, bn_prefix = f"{path}.conv_block.0", f"{path}.conv_block.1."
        else:
            conv_key, bn_prefix = path, None
        if spec.transpose:
            weight = torch_layouts.take(sd, conv_key + ".weight", (spec.cin, spec.cout, k, k))
            kernel = torch_layouts.conv_transpose_kernel(weight)
        else:
            weight = torch_layouts.take(sd, conv_key + ".weight", (spec.cout, spec.cin, k, k))
            kernel = torch_layouts.conv_kernel(weight)
        bias = torch_layouts.take(sd, conv_key + ".bias", (spec.cout,))
        params[name] = {"conv": {"kernel": kernel.astype(np.float32),
                                 "bias": bias.astype(np.float32)}}
        if bn_prefix:
            bn_params, bn_stats = torch_layouts.batch_norm(sd, bn_prefix, spec.cout)
            params[name]["bn"] = {k_: v.astype(np.float32) for k_, v in bn_params.items()}
            stats[name] = {"bn": {k_: v.astype(np.float32) for k_, v in bn_stats.items()}}
    torch_layouts.check_all_used(sd, sd.used, "wav2lip checkpoint")
    return {"params": params, "batch_stats": stats}, wav2lip_config()


def load_wav2lip(path: str, *, fold_batch_norm: bool = False):
    """(model, variables) ready for `model.apply(variables, audio, face)` in eval mode.

    `path`: a converted checkpoint directory (`python -m metatalk_jax.convert wav2lip IN.pth
    OUT`) or a Wav2Lip .pth read directly (no torch needed). With `fold_batch_norm`, returns
    Wav2Lip(folded_batch_norm=True) and BN-folded variables (faster inference, same outputs).
    """
    from metatalk_jax.convert.converted import load_weights

    variables = load_weights(path, MODEL_NAME, convert_wav2lip, "Wav2Lip")
    if fold_batch_norm:
        return w2l.Wav2Lip(folded_batch_norm=True), w2l.fold_batch_norm(variables)
    return w2l.Wav2Lip(), variables
