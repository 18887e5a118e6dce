"""Config of the neural renderer's training (`python -m metatalk_jax.train`).

Launch:
  python -m metatalk_jax.train --config configs/renderer.py --workdir runs/me \
      --config.data.subject=subjects/me                        # AudioDVP's 256 baseline
  python -m metatalk_jax.train --config configs/renderer.py:gpu --workdir runs/me_hd \
      --config.data.subject=subjects/me                        # HD 1024, bf16, one GPU host
  TPU_NAME=my-v5e-16 ZONE=us-west4-a launch/tpu_pod.sh -- --config renderer:tpu_pod \
      --workdir gs://bucket/runs/me --config.data.subject=gs://bucket/subjects/me
  python -m metatalk_jax.train --config configs/renderer.py:tiny --workdir /tmp/r \
      --config.data.subject=S                                  # CPU tests: seconds per step

Variants: (default) AudioDVP's unet_256 at 256x256; tiny: 32x32 crops and a small U-Net for the
tests; cpu: 128x128 crops from the mouth reference, corrected by a small U-Net at 64, and Meta
Talk's conditioning, trained for real on a 2-core CPU (the demo's); gpu: the HD generator at 1024 in
bf16; tpu_pod: the same on a v5e:4x4 slice with FSDP (config.tpu_topology; check a slice with
`--compile-only [--topology T]`).
The subject must have been prepared at a crop resolution that the training resolution divides.
"""

import ml_collections

from metatalk_jax.errors import InputError
from metatalk_jax.train.engine_config import (add_engine_fields, use_cpu_engine_settings,
                                              use_tiny_engine_settings)


def use_faithful_renderer(config) -> None:
    """Meta Talk's expression-faithful renderer: the mouth cavity drawn into the renders (the
    3DMM's closed mesh otherwise hides how open the driven mouth is) and augmentations that take
    away what else identifies a training frame (where the face sits in the crop, its lighting),
    so the generator draws the mouth its input shows, not the one it saw on that frame.
    Measured on pixels in benchmarks/BENCHMARKS.md, "Expression-faithful renderer"."""
    config.data.conditioning = "mouth_cavity"
    config.data.augment_shift = 0.06
    config.data.augment_gain = 0.2


def use_mouth_reference(config, correction_factor: int = 1) -> None:
    """The mouth reference: a real crop of the subject with the nearest mouth, redrawn in the
    frame's 3DMM geometry, which the generator corrects (at resolution / correction_factor)
    rather than redraws, so the mouth keeps the footage's detail. Measured on pixels in
    benchmarks/BENCHMARKS.md, "A sharp mouth"."""
    config.data.mouth_reference = True
    config.model.correction_factor = int(correction_factor)


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "renderer"
    config.seed = 0
    config.total_steps = 70_000            # AudioDVP: 250 epochs of a 3-min video at batch 16
    config.batch_size = 16                 # global, over all processes and devices

    config.data = ml_collections.ConfigDict()
    config.data.subject = ""               # the prepared subject directory (required)
    config.data.model = ""                 # morphable model .npz prepare used ("" = offline)
    config.data.resolution = 256           # training crop side; divides the stored crop side
    config.data.window = 7                 # consecutive renders per example (AudioDVP: 7)
    config.data.flip = True                # random left-right flips (AudioDVP trains with them)
    # AudioDVP's renderer (the default) sees the 3DMM as it is; Meta Talk's configs (cpu, gpu,
    # tpu_pod, the demo) use the expression-faithful settings of `use_faithful_renderer`, and
    # cpu and the demo the mouth reference of `use_mouth_reference` (gpu and tpu_pod: not yet,
    # their TPU fit check is to be re-run with it).
    config.data.conditioning = "audiodvp"  # or "mouth_cavity" (subject/conditioning.py)
    config.data.augment_shift = 0.0        # random shifts of input + target, fraction of the side
    config.data.augment_gain = 0.0         # random per-channel gains of the renders, +-fraction
    # A real crop of the subject with the nearest mouth, redrawn in the frame's 3DMM geometry,
    # as 3 more input channels (subject/mouth_references.py): the mouth's detail from footage.
    config.data.mouth_reference = False
    config.data.reference_gap_s = 0.2      # training references are at least this far in time
    config.data.workers = 0                # grain worker processes per host (0 = in-process)

    config.model = ml_collections.ConfigDict()
    config.model.arch = "unet"             # "unet" (AudioDVP) or "hd" (coarse-to-fine)
    config.model.num_downs = 8             # unet_256
    config.model.ngf = 64
    config.model.ndf = 64
    config.model.n_layers_d = 3
    config.model.num_d_scales = 1
    config.model.use_refine = True
    config.model.use_dropout = True
    config.model.dtype = "float32"         # compute dtype; parameters stay float32
    # With data.mouth_reference: the generator's correction of the reference is computed at
    # resolution / correction_factor (models/renderer.py OnReference).
    config.model.correction_factor = 1
    # arch "hd" only: the U-Net runs at resolution / hd_global_factor (4: unet_256 at 1024), a
    # local enhancer with hd_local_ngf channels at full resolution and hd_local_blocks residual
    # blocks in the fused trunk (metatalk_jax/models/renderer.py HDGenerator).
    config.model.hd_global_factor = 4
    config.model.hd_local_ngf = 32
    config.model.hd_local_blocks = 3

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-4                 # pix2pix's Adam
    config.optim.beta1 = 0.5
    config.optim.beta2 = 0.999
    config.optim.eps = 1e-8

    config.loss = ml_collections.ConfigDict()
    config.loss.lambda_l1 = 100.0
    config.loss.lambda_fm = 0.0            # feature matching (HD variant)

    add_engine_fields(config, log_every_steps=50, eval_every_steps=5000,
                      preview_every_steps=1000)

    if arg in ("tiny", "cpu"):
        config.total_steps = 6
        config.batch_size = 8
        config.data.resolution = 32
        config.model.num_downs = 5
        config.model.ngf = 8
        config.model.ndf = 8
        config.model.n_layers_d = 2
        use_tiny_engine_settings(config)
        if arg == "cpu":
            # Your own clip on a laptop (and the demo): 128-px faces drawn from the mouth
            # reference, the generator's correction at 64 px (about 3.5 minutes on 2 cores),
            # with Meta Talk's expression-faithful conditioning.
            config.total_steps = 1200
            config.data.resolution = 128
            use_faithful_renderer(config)
            use_mouth_reference(config, correction_factor=2)
            config.model.num_downs = 6
            config.model.ngf = 16
            use_cpu_engine_settings(config)
    elif arg in ("gpu", "tpu_pod"):
        # HD: the coarse-to-fine generator at 1024 in bf16 with multi-scale discriminators.
        config.data.resolution = 1024
        use_faithful_renderer(config)
        config.model.arch = "hd"
        config.model.num_d_scales = 3
        config.model.dtype = "bfloat16"
        config.loss.lambda_fm = 10.0
        config.data.workers = 8
        config.batch_size = 8 if arg == "gpu" else 16
        if arg == "tpu_pod":
            config.mesh.fsdp = 4
            # Sized for v5e:4x4 (16 chips, 1 example per chip): the train step compiles to
            # 8.0 of 15.75 GiB per chip; at 2 per chip (batch 32) it needs 14.4 GiB, at 4 it does
            # not fit (`--compile-only`, benchmarks/BENCHMARKS.md "TPU fit"). Batch 16 is
            # AudioDVP's; BatchNorm statistics are over the global batch.
            config.tpu_topology = "v5e:4x4"
    elif arg not in (None, ""):
        raise InputError(f"configs/renderer.py: unknown variant {arg!r} "
                         "(known: tiny, cpu, gpu, tpu_pod)")
    return config
