"""Key map from pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth) to the Flax
FIDInceptionV3 of metatalk_jax.models.inception, and a loader for the FID evaluation.

The .pth is a bare state dict of torchvision's Inception3 built with num_classes=1008 and no aux
head, with pytorch-fid's FID blocks in Mixed_5b..7c (same names as torchvision's). Per BasicConv2d
at module path P (e.g. "Mixed_5b.branch1x1"; Flax path P split at the dots):
  P.conv.weight [O,I,kh,kw]               -> params/P/conv/kernel [kh,kw,I,O]
  P.bn.{weight,bias}                      -> params/P/bn/{scale,bias}
  P.bn.{running_mean,running_var}         -> batch_stats/P/bn/{mean,var}
  P.bn.num_batches_tracked                   ignored
  fc.weight [1008,2048], fc.bias [1008]      checked and skipped: the logits are not part of
                                             the pool_3 features FID uses
Any other key (e.g. torchvision's ImageNet AuxLogits.*) is an error: that is another network.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from metatalk_jax.convert import torch_layouts
from metatalk_jax.models import inception as inc

MODEL_NAME = "inception"


def inception_config() -> dict:
    """The config stored beside converted weights (JSON-serialisable)."""
    return {"model": MODEL_NAME, "input_size": inc.INPUT_SIZE, "features": inc.FEATURES,
            "bn_epsilon": inc.BN_EPSILON, "channel_order": "RGB", "input_range": [0.0, 1.0],
            "fc_skipped": True, "parameters": inc.count_parameters()}


def _set(tree: dict, path: str, leaf: dict) -> None:
    node = tree
    for name in path.split("."):
        node = node.setdefault(name, {})
    node.update(leaf)


def convert_inception(state_dict: Mapping) -> tuple[dict, dict]:
    """pytorch-fid Inception state_dict -> ({"params", "batch_stats"}, config).

    Every conv/BN key must be present with the reference's shape; a mismatch raises a one-line
    KeyError/ValueError naming the key; a left-over key raises ValueError.
    """
    sd = torch_layouts.TrackedStateDict(torch_layouts.strip_prefix(state_dict))
    params, stats = {}, {}
    for path, spec in inc.reference_layers():
        weight = torch_layouts.take(sd, f"{path}.conv.weight",
                                    (spec.cout, spec.cin) + spec.kernel)
        kernel = torch_layouts.conv_kernel(weight).astype(np.float32)
        bn_params, bn_stats = torch_layouts.batch_norm(sd, f"{path}.bn.", spec.cout)
        _set(params, path, {"conv": {"kernel": kernel},
                            "bn": {k: v.astype(np.float32) for k, v in bn_params.items()}})
        _set(stats, path, {"bn": {k: v.astype(np.float32) for k, v in bn_stats.items()}})
    # The 1008-way classifier: consumed (so it is not reported as left over) but not converted.
    # Its shape is checked because torchvision's ImageNet Inception (1000 classes) is a different
    # network whose features do not give comparable FIDs.
    if "fc.weight" in sd or "fc.bias" in sd:
        torch_layouts.take(sd, "fc.weight", (inc.FC_CLASSES, inc.FEATURES))
        torch_layouts.take(sd, "fc.bias", (inc.FC_CLASSES,))
    torch_layouts.check_all_used(sd, sd.used, "inception checkpoint")
    return {"params": params, "batch_stats": stats}, inception_config()


def load_inception(path) -> tuple[inc.FIDInceptionV3, dict]:
    """(model, variables) for `inception_features(frames, variables)` / `model.apply`.

    `path`: a converted checkpoint directory (`python -m metatalk_jax.convert inception
    pt_inception-2015-12-05-6726825d.pth OUT`) or the .pth itself (read without torch).
    """
    from metatalk_jax.convert.converted import load_weights

    variables = load_weights(path, MODEL_NAME, convert_inception, "pytorch-fid Inception")
    return inc.FIDInceptionV3(), variables
