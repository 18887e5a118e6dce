"""The neural renderer as a training task: prepared subject -> renderer checkpoint.

Data: 7-frame windows of the subject's TFDS target-video shards (data_pipelines/
renderer_windows.py), read through grain, with each frame's 3DMM render taken from the subject's
render cache (subject/render_cache.py: every frame rendered once at the training resolution
when the task starts). Each step masks the window's renders and the real crop with the mouth
masks (subject/conditioning.py), augments them (train/renderer_augment.py: flips, shifts,
gains), and takes one pix2pix GAN step (train/gan_step.py). With config.data.mouth_reference,
each example also carries the centre frame's mouth reference (subject/mouth_references.py:
the nearest other training mouth, redrawn in the frame's geometry, from a second cache), 3 more
input channels. Evaluation reports the held-out L1 (in [0, 1] pixel units, over the whole crop
and inside the mouth mask) and SSIM (over the crop and over the windows centred in the mouth
mask) of the eval-mode generator on the validation frames.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from metatalk_jax.data_pipelines.renderer_windows import crop_resolutions, renderer_windows
from metatalk_jax.data_pipelines.subject_frames import open_target_source
from metatalk_jax.data_pipelines.windows import make_window_batches
from metatalk_jax.models.renderer import make_renderer
from metatalk_jax.subject.conditioning import masked_target, stack_window, with_reference
from metatalk_jax.subject.face_model import subject_face_model
from metatalk_jax.subject.layout import load_training_subject
from metatalk_jax.subject.render_cache import ensure_reference_cache, ensure_render_cache
from metatalk_jax.train import gan_step
from metatalk_jax.train.renderer_augment import random_flip, random_gain, random_shift
from metatalk_jax.train.task_protocol import WINDOW_ROW_SPEC


class RendererTask:
    """Everything the engine (train/loop.py) needs to train the renderer on one subject.

    config: configs/renderer.py (data.*, model.*, optim.*, loss.*).
    """

    name = "renderer"

    def __init__(self, config, *, shapes_only: bool = False):
        """shapes_only: from the config alone, for the compile check (train/compile_check.py):
        no subject, render cache or data is read, the training side is config.data.resolution
        as given (not checked against the stored crops), and there are no data sources."""
        self.config = config
        data = config.data
        self.window = int(data.window)
        self.reference = bool(data.get("mouth_reference", False))
        if shapes_only:
            self.resolution = int(data.resolution)
        else:
            self._open_subject(data)
        # Augmentations that take away what identifies a training frame besides its mouth
        # (configs/renderer.py data.augment_*): whole-pixel shifts and render colour gains.
        self.shift = int(round(float(data.get("augment_shift", 0.0)) * self.resolution))
        self.gain = float(data.get("augment_gain", 0.0))
        self.generator, self.discriminator = make_renderer(config.model,
                                                           reference=self.reference)
        self.g_tx, self.d_tx = gan_step.make_gan_optimizers(config.optim)
        b = int(config.batch_size)
        channels = 3 * self.window + (3 if self.reference else 0)
        self.input_shape = (b, self.resolution, self.resolution, channels)
        self.target_shape = (b, self.resolution, self.resolution, 3)

    def _open_subject(self, data) -> None:
        """Sets subject, resolution (the training side, checked against the stored crops) and
        the train and validation window sources, rendering the subject's caches if needed."""
        self.subject = load_training_subject(data.subject)
        _, self.resolution = crop_resolutions(
            open_target_source(self.subject.tfds_dir, "train"), data.resolution)
        face_model = subject_face_model(self.subject, data.get("model") or None)
        # Each process renders its own copy (to a local cache dir; the same file when
        # processes share a host), so nothing waits on another host.
        cache = ensure_render_cache(self.subject, face_model, self.resolution,
                                    conditioning=data.get("conditioning", "audiodvp"),
                                    show_progress=jax.process_index() == 0)
        references = None
        if self.reference:
            gap = int(round(float(data.get("reference_gap_s", 0.2))
                            * float(self.subject.meta["fps"])))
            references = ensure_reference_cache(self.subject, face_model, self.resolution,
                                                gap=gap, show_progress=jax.process_index() == 0)
        self.train_source, self.eval_source = (
            renderer_windows(self.subject.tfds_dir, split, render_cache=cache,
                             window=self.window, resolution=self.resolution,
                             reference_cache=references)
            for split in ("train", "validation"))

    # -- constants and state ---------------------------------------------------------------
    def constants(self):
        """Replicated arrays the steps take as an argument: none for the renderer."""
        return {}

    def init_state(self, rng) -> gan_step.GanState:
        return gan_step.create_gan_state(rng, self.generator, self.discriminator, self.g_tx,
                                         self.d_tx, self.input_shape, self.target_shape)

    # -- data ------------------------------------------------------------------------------
    def example_spec(self) -> dict:
        """{key: (shape, dtype)} of one example (data_pipelines/renderer_windows.py): the
        window's W renders [W, R, R, 3] and mouth masks [W, R, R] (uint8), which positions are
        in the clip [W], the centre frame's real crop [R, R, 3] uint8 (and its mouth reference,
        with config.data.mouth_reference)."""
        w, r = self.window, self.resolution
        spec = {"render": ((w, r, r, 3), np.uint8), "mouth_mask": ((w, r, r), np.uint8),
                "valid": ((w,), bool), "target": ((r, r, 3), np.uint8)}
        if self.reference:
            spec["reference"] = ((r, r, 3), np.uint8)
        return {**spec, **WINDOW_ROW_SPEC}

    def train_batches(self, *, seed: int, process_index: int, process_count: int):
        return make_window_batches(
            self.train_source, global_batch=int(self.config.batch_size), seed=seed,
            process_index=process_index, process_count=process_count, num_epochs=None,
            shuffle=True, drop_remainder=True, worker_count=int(self.config.data.workers))

    def eval_batches(self, *, process_index: int, process_count: int):
        return make_window_batches(
            self.eval_source, global_batch=int(self.config.batch_size), seed=0,
            process_index=process_index, process_count=process_count, num_epochs=1,
            shuffle=False, drop_remainder=False, worker_count=0)

    # -- steps (pure; jitted by the engine) ------------------------------------------------
    def _inputs_and_target(self, batch, gain_key=None):
        renders = batch["render"].astype(jnp.float32) / 255.0
        if gain_key is not None:
            renders = random_gain(gain_key, batch["example_id"], self.gain, renders)
        masks = batch["mouth_mask"].astype(jnp.float32) / 255.0
        inputs = stack_window(renders, masks, batch["valid"])
        centre = masks[:, self.window // 2]
        if self.reference:
            inputs = with_reference(inputs, batch["reference"].astype(jnp.float32) / 255.0,
                                    centre)
        target = masked_target(batch["target"], centre)
        return inputs, target

    def train_step(self, state, batch, rng, constants):
        flip_key, shift_key, gain_key, step_key = jax.random.split(rng, 4)
        inputs, target = self._inputs_and_target(batch, gain_key if self.gain else None)
        ids = batch["example_id"]
        if self.config.data.flip:
            inputs, target = random_flip(flip_key, ids, inputs, target)
        if self.shift:
            inputs, target = random_shift(shift_key, ids, self.shift, inputs, target)
        return gan_step.gan_train_step(
            state, inputs, target, step_key, generator=self.generator,
            discriminator=self.discriminator, g_tx=self.g_tx, d_tx=self.d_tx,
            loss_config=self.config.loss)

    def eval_step(self, state, batch, constants) -> dict:
        """Sums over the batch's real (non-padding) examples; the engine divides by `count`."""
        inputs, target = self._inputs_and_target(batch)
        fake = gan_step.generate(state, inputs, generator=self.generator)
        fake01, target01 = (fake + 1.0) / 2.0, (target + 1.0) / 2.0
        weight = batch["example_valid"].astype(jnp.float32)
        mask = batch["mouth_mask"][:, self.window // 2].astype(jnp.float32)[..., None] / 255.0
        abs_err = jnp.abs(fake01 - target01)
        l1 = jnp.mean(abs_err, axis=(1, 2, 3))
        l1_mouth = jnp.sum(abs_err * mask, axis=(1, 2, 3)) / jnp.maximum(
            3.0 * jnp.sum(mask, axis=(1, 2, 3)), 1.0)
        # dm-pix's defaults: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03 (REFERENCES).
        scores = dm_pix.ssim(fake01, target01, max_val=1.0, return_map=True)
        # The map covers the windows wholly inside the crop ([R-10, R-10]): the mouth's SSIM is
        # its mean over the windows centred in the mouth mask.
        inset = (mask.shape[1] - scores.shape[1]) // 2
        centred = mask[:, inset:inset + scores.shape[1], inset:inset + scores.shape[2]]
        ssim_mouth = jnp.sum(scores * centred, axis=(1, 2, 3)) / jnp.maximum(
            3.0 * jnp.sum(centred, axis=(1, 2, 3)), 1.0)
        return {"l1": jnp.sum(l1 * weight), "l1_mouth": jnp.sum(l1_mouth * weight),
                "ssim": jnp.sum(jnp.mean(scores, axis=(1, 2, 3)) * weight),
                "ssim_mouth": jnp.sum(ssim_mouth * weight), "count": jnp.sum(weight)}

    @property
    def preview_labels(self) -> tuple[str, ...]:
        """Titles of preview_step's columns, left to right."""
        reference = ("mouth reference",) if self.reference else ()
        return ("3DMM render (centre frame)", *reference, "generated", "real frame")

    def preview_step(self, state, batch, constants) -> jax.Array:
        """[B, R, 3R, 3] float in [0, 1]: centre-frame render | generated | real, per example
        ([B, R, 4R, 3] with the mouth reference after the render)."""
        inputs, target = self._inputs_and_target(batch)
        fake = gan_step.generate(state, inputs, generator=self.generator)
        c = 3 * (self.window // 2)
        panels = [inputs[..., c:c + 3]]
        if self.reference:
            panels.append(inputs[..., 3 * self.window:])
        return (jnp.concatenate(panels + [fake, target], axis=2) + 1.0) / 2.0
