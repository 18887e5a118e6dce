"""Config of the audio-to-expression (A2E) training (`python -m metatalk_jax.train`).

Launch:
  python -m metatalk_jax.train --config configs/a2e.py --workdir runs/me_a2e \
      --config.data.subject=subjects/me --config.data.pseudo_dirs=pseudo/me   # Meta Talk's A2E
  python -m metatalk_jax.train --config configs/a2e.py --workdir runs/me_a2e_dvp \
      --config.data.subject=subjects/me --config.model.kind=audiodvp \
      --config.data.window=7 --config.data.pseudo_ratio=0.0 --config.loss.centre_only=True \
      --config.optim.schedule=constant --config.optim.lr=1e-3                  # AudioDVP baseline
  python -m metatalk_jax.train --config configs/a2e.py:gpu --workdir runs/me_a2e \
      --config.data.subject=subjects/me --config.data.pseudo_dirs=pseudo/me
  launch/tpu_pod.sh my-tpu us-central2-b -- --config configs/a2e.py:tpu_pod \
      --workdir gs://bucket/runs/me_a2e --config.data.subject=/data/subjects/me \
      --config.data.pseudo_dirs=/data/pseudo/me
  python -m metatalk_jax.train --config configs/a2e.py:tiny --workdir /tmp/a \
      --config.data.subject=S --config.data.model=procedural                 # CPU tests

Variants: (default) the metatalk A2E on one host; tiny: a small model and batch for 2-core CPU
tests in seconds; cpu: a small model trained for real on a 2-core CPU (the demo's); gpu: bigger
batch, bf16, grain workers; tpu_pod: the same over a pod slice.
data.pseudo_dirs: pseudo-video corpora (data_pipelines/pseudo_corpus.py), comma-separated;
data.pseudo_ratio: the fraction of every global batch drawn from them (needs pseudo_dirs when > 0).
"""

import ml_collections

from metatalk_jax.errors import InputError
from metatalk_jax.train.engine_config import (add_engine_fields, use_cpu_engine_settings,
                                              use_tiny_engine_settings)


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.task = "a2e"
    config.seed = 0
    config.total_steps = 20_000
    config.batch_size = 64                 # global, over all processes and devices

    config.data = ml_collections.ConfigDict()
    config.data.subject = ""               # the prepared subject directory (required)
    config.data.model = ""                 # morphable model .npz prepare used ("" = offline,
                                           # "procedural" = the formula model, for tests)
    config.data.pseudo_dirs = ""           # comma-separated pseudo-video corpora
    config.data.pseudo_ratio = 0.5         # fraction of each global batch from pseudo data
    config.data.window = 15                # frames per example (odd): 0.6 s at 25 fps
    config.data.mel_columns = 16           # mel columns per frame (Wav2Lip's 0.2 s)
    config.data.eval_on = "target"         # "target", "pseudo" or "both" validation frames
    config.data.workers = 0                # grain worker processes per host (0 = in-process)
    config.data.cache_frames = 1 << 16     # per-process cache of per-frame features

    config.model = ml_collections.ConfigDict()
    config.model.kind = "metatalk"         # "metatalk" (ours) or "audiodvp" (baseline)
    config.model.expression_dim = 64       # replaced by the subject's E by the task
    config.model.encoder_channels = (32, 64, 128, 256)
    config.model.features = 256
    config.model.dilations = (1, 2, 4, 8)
    config.model.dropout = 0.1
    config.model.dtype = "float32"         # compute dtype; parameters stay float32

    config.loss = ml_collections.ConfigDict()
    config.loss.expression = 1.0           # MSE of the coefficients
    config.loss.mouth = 1.0                # mouth-vertex displacement error (normalised, see task)
    config.loss.smooth = 0.5               # frame-to-frame velocity error
    config.loss.centre_only = False        # train the window's centre frame only (AudioDVP)

    # Mel-window augmentations in training (metatalk_jax/train/mel_augment.py): voices, levels and
    # rooms the corpus lacks. All zero = off.
    config.augment = ml_collections.ConfigDict()
    config.augment.level_db = 6.0          # +- dB on every example
    config.augment.warp = 0.12             # vocal-tract warp of the mel bands, +- fraction
    config.augment.warp_prob = 0.5
    config.augment.reverb_rt60_s = (0.15, 0.8)
    config.augment.reverb_prob = 0.3
    config.augment.noise_snr_db = (8.0, 30.0)
    config.augment.noise_prob = 0.3

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3
    config.optim.schedule = "cosine"       # "cosine" (with warmup) or "constant" (AudioDVP: Adam)
    config.optim.warmup_steps = 500
    config.optim.weight_decay = 1e-4
    config.optim.grad_clip = 1.0           # global norm; 0 = off

    add_engine_fields(config, log_every_steps=100, eval_every_steps=2000,
                      preview_every_steps=2000)

    if arg in ("tiny", "cpu"):
        config.total_steps = 6
        config.batch_size = 16
        config.data.pseudo_ratio = 0.0     # target only; with pseudo_dirs pass a ratio (a
                                           # ratio of 0 with pseudo_dirs is refused, not ignored)
        config.data.window = 7
        config.data.mel_columns = 8
        config.data.cache_frames = 1 << 14
        config.model.encoder_channels = (8, 16, 32)
        config.model.features = 32
        config.model.dilations = (1, 2)
        config.model.dropout = 0.0
        config.optim.lr = 3e-3
        config.optim.warmup_steps = 10
        config.optim.weight_decay = 0.0
        if arg == "tiny":      # tests in seconds: the plain features
            config.augment.update(dict(level_db=0.0, warp_prob=0.0, reverb_prob=0.0,
                                       noise_prob=0.0))
        use_tiny_engine_settings(config)
        if arg == "cpu":
            # Your own clip on a laptop (and the demo): a model a 2-core CPU trains in a minute.
            config.total_steps = 700
            config.batch_size = 32
            config.data.pseudo_ratio = 0.5
            config.data.window = 9
            config.data.mel_columns = 16
            config.model.encoder_channels = (16, 32, 64)
            config.model.features = 64
            use_cpu_engine_settings(config)
    elif arg in ("gpu", "tpu_pod"):
        config.model.dtype = "bfloat16"
        config.data.workers = 8
        config.batch_size = 256 if arg == "gpu" else 1024
        config.optim.lr = 2e-3
        if arg == "tpu_pod":
            # Sized for (compile-checked by `--compile-only`, benchmarks/BENCHMARKS.md "TPU fit")
            config.tpu_topology = "v5e:2x2"
    elif arg not in (None, ""):
        raise InputError(f"configs/a2e.py: unknown variant {arg!r} "
                         "(known: tiny, cpu, gpu, tpu_pod)")
    return config
