"""Safe import of PyTorch checkpoints (.pth) into Flax variables, without torch.

- torch_pickle: a restricted reader for torch.save files (zip and legacy formats) that only
  rebuilds tensors as numpy arrays and refuses every other global before anything runs.
- torch_layouts: layout helpers for key maps (conv/linear kernels, batch norm, checked lookups).
- registry: model name -> key-map function ("module:function", imported lazily).
- converted: writing/reading the converted checkpoint directory (meta.json + parameters).

CLI: `python -m metatalk_jax.convert MODEL IN.pth OUT`.
"""

from __future__ import annotations
