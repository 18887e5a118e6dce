"""XLA:CPU settings for training on a CPU, applied before JAX creates its CPU client.

jax 0.10.2's XLA:CPU hands convolutions to YNNPACK by default, which computes the weight
gradients of the renderer's large-image convolutions 5-10x slower than XLA's own (Eigen)
convolutions (measured by benchmarks/renderer.py, `--keep-ynn-convs` shows the default). The
flag below keeps YNNPACK for everything else; it changes nothing on GPU or TPU.
"""

from __future__ import annotations

import os

CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def use_xla_convolutions_on_cpu() -> None:
    """Adds CPU_CONV_FLAG to XLA_FLAGS (once). Call before the first `import jax` of the
    process; later calls have no effect on an already created CPU client."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_CONV_FLAG}".strip()
