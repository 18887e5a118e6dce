"""The audio-to-expression net as a training task: target + pseudo shards -> A2E checkpoint.

Data: W-frame windows (data_pipelines/a2e_windows.py) of the subject's target-video shards and of
the pseudo-video corpora in config.data.pseudo_dirs, mixed at config.data.pseudo_ratio per global
batch. Model: models/a2e.py (config.model.kind). Loss, over the valid window positions (only the
centre one with config.loss.centre_only):

  expression  mean squared coefficient error;
  mouth       the squared displacement error of the 3DMM's lower-face vertices, err^T G err, with
              G = B^T B over the expression-basis rows B of those vertices (the model's
              `mouth_triangle_ids`), normalised so that trace(G) = E: errors in coefficients that
              move the mouth cost more, and the term is on the scale of the MSE;
  smooth      the frame-to-frame velocity error |(p[t+1]-p[t]) - (y[t+1]-y[t])|^2, which
              penalises jitter the truth does not have.

Training batches' mel windows are augmented (config.augment, train/mel_augment.py: level, noise,
reverb, a vocal-tract warp) so voices, levels and rooms it never heard drive the same mouth.

Evaluation (each held-out frame once, as the centre of its window): `mse` (per coefficient),
`mouth_rms` (RMS distance of the lower-face vertices between predicted and true expression, in
the morphable model's units) and `mouth_rms_mm` (the same in millimetres: BFM is in micrometres
before the convention's scale), and the Pearson correlation of predicted vs true expressions
(coefficients standardised by the training frames' mean and std, pooled over coefficients and
frames), and `mouth_range_ratio`, the predicted mouth's RMS deviation from the training mean over
the fitted one's (1: as wide a range of motion as the fitted mouth; below 1: damped). The engine
averages per-frame sums, so eval_step returns moments (`corr_*`, `range_*`); `finalize_eval`
turns them into `pearson` and `mouth_range_ratio`.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metatalk_jax.data_pipelines.a2e_windows import a2e_windows, pseudo_frame_sources
from metatalk_jax.data_pipelines.subject_frames import open_target_source
from metatalk_jax.data_pipelines.windows import make_window_batches
from metatalk_jax.errors import InputError
from metatalk_jax.models.a2e import make_a2e
from metatalk_jax.subject.face_model import prepared_morphable
from metatalk_jax.subject.layout import load_training_subject
from metatalk_jax.train.mel_augment import augment_mel
from metatalk_jax.train.task_protocol import WINDOW_ROW_SPEC

MOMENT_KEYS = ("corr_p", "corr_t", "corr_pp", "corr_tt", "corr_pt")
RANGE_KEYS = ("range_p", "range_t")
_PLOT_COEFFICIENTS = 4      # preview: first coefficients drawn
_PANEL_HEIGHT, _PANEL_WIDTH = 40, 160
_TRUE_RGB, _PRED_RGB = (0.25, 0.95, 0.3), (1.0, 0.3, 0.3)


@flax.struct.dataclass
class A2EState:
    step: jax.Array     # int32 scalar
    params: Any
    opt: Any


def pearson_from_moments(means: dict) -> float:
    """Pearson r from the pooled moment means E[p], E[t], E[p^2], E[t^2], E[p t]."""
    p, t, pp, tt, pt = (float(means[k]) for k in MOMENT_KEYS)
    var_p, var_t = pp - p * p, tt - t * t
    return (pt - p * t) / max(np.sqrt(max(var_p, 0.0) * max(var_t, 0.0)), 1e-12)


def mouth_vertex_gram(model, expression_dim: int) -> tuple[np.ndarray, int]:
    """(G [E, E] float64 = B^T B over the mouth vertices' expression rows, their count M).

    err^T G err / M is the mean squared displacement (model units^2) of those vertices for an
    expression error `err`. Mouth vertices: every vertex of the model's mouth triangles.
    """
    basis = np.asarray(model.exp_basis)
    if basis.shape[-1] < expression_dim:
        raise InputError(f"{model.name}: {basis.shape[-1]} expression components, the subject "
                         f"has {expression_dim}")
    vertices = np.unique(np.asarray(model.triangles)[np.asarray(model.mouth_triangle_ids)])
    if vertices.size == 0:
        raise InputError(f"{model.name}: no mouth triangles")
    rows = basis[vertices, :, :expression_dim].astype(np.float64).reshape(-1, expression_dim)
    return rows.T @ rows, int(vertices.size)


class A2ETask:
    """Everything the engine (train/loop.py) needs to train the A2E on one subject."""

    name = "a2e"

    def __init__(self, config, *, shapes_only: bool = False):
        """shapes_only: from the config alone, for the compile check (train/compile_check.py):
        no subject, morphable model or data is read, E is config.model.expression_dim (the
        subject's E is unknown; 64: the BFM's expression basis), the constants are placeholders
        of their shapes, and there are no data sources."""
        self.config = config
        data = config.data
        self.window, self.mel_columns = int(data.window), int(data.mel_columns)
        self.pseudo_ratio = float(data.pseudo_ratio)
        if shapes_only:
            self.expression_dim = int(config.model.expression_dim)
            self._constants = placeholder_constants(self.expression_dim)
            self.mm_per_unit = 1.0     # scales one eval metric; no shape depends on it
        else:
            self._open_subject(data)
        self.model = make_a2e(config.model, self.expression_dim)
        self.tx = _optimizer(config)
        b = int(config.batch_size)
        self._mel_shape = (b, self.window, 80, self.mel_columns)
        self.augment = mel_augmentation(config)

    def _open_subject(self, data) -> None:
        """Sets expression_dim (the subject's E), the data sources, the constants from the
        subject's fitted model and training expressions, and mm_per_unit."""
        subject = load_training_subject(data.subject)
        self._data_sources(subject, data)
        e = self.expression_dim
        # The mouth loss needs the expression basis of the model the subject was fitted with.
        face_model = prepared_morphable(subject, str(data.model) or None)
        gram, count = mouth_vertex_gram(face_model, e)
        train_frames = len(self.train_target)
        expressions = np.asarray(subject.coefficients["expression"][:train_frames], np.float64)
        self._constants = {
            "mouth_gram": (gram / count).astype(np.float32),            # model units^2
            "mouth_loss_gram": (gram * e / np.trace(gram)).astype(np.float32),
            "expr_mean": expressions.mean(0).astype(np.float32),
            "expr_std": np.maximum(expressions.std(0), 1e-6).astype(np.float32),
        }
        # Raw BFM geometry is in micrometres; the convention scales it to model units.
        self.mm_per_unit = 1e-3 / float(face_model.conv["scale"])

    def _data_sources(self, subject, data) -> None:
        """Windows of the training target and pseudo frames and of the held-out frames
        (config.data.eval_on: target, pseudo or both, in one source)."""
        windows = dict(window=self.window, mel_columns=self.mel_columns,
                       cache_frames=int(data.cache_frames))
        target = {split: open_target_source(subject.tfds_dir, split)
                  for split in ("train", "validation")}
        self.train_target = a2e_windows([target["train"]], **windows)
        self.expression_dim = int(self.train_target.position_spec["expression"][0][-1])
        roots = [d.strip() for d in str(data.pseudo_dirs).split(",") if d.strip()]
        if self.pseudo_ratio > 0 and not roots:
            raise InputError(f"config.data.pseudo_ratio={self.pseudo_ratio} but no pseudo data: "
                             "pass --config.data.pseudo_dirs=DIR[,DIR] or "
                             "--config.data.pseudo_ratio=0")
        if roots and self.pseudo_ratio == 0 and data.eval_on == "target":
            # e.g. the tiny/cpu test variants set the ratio to 0: say so, never drop them silently
            raise InputError(f"config.data.pseudo_dirs={','.join(roots)} would be ignored: "
                             "config.data.pseudo_ratio is 0; pass --config.data.pseudo_ratio="
                             "0.5 (the fraction of each batch from them)")
        checks = dict(expression_dim=self.expression_dim,
                      audio_samples=int(np.shape(target["train"][0]["audio"])[0]),
                      subject_fingerprint=subject.meta.get("fingerprint"))
        pseudo = {split: pseudo_frame_sources(roots, split, **checks)
                  for split in ("train", "validation")}
        self.train_pseudo = None
        if self.pseudo_ratio > 0 and sum(map(len, pseudo["train"])):
            self.train_pseudo = a2e_windows(pseudo["train"], **windows)
        if data.eval_on not in ("target", "pseudo", "both"):
            raise InputError(f"config.data.eval_on must be target, pseudo or both, got "
                             f"{data.eval_on!r}")
        held_out = [target["validation"]] if data.eval_on in ("target", "both") else []
        if data.eval_on in ("pseudo", "both"):
            if not sum(map(len, pseudo["validation"])):
                raise InputError(f"config.data.eval_on={data.eval_on!r} but the pseudo corpora "
                                 f"{roots} have no validation clips")
            held_out += pseudo["validation"]
        self.eval_source = a2e_windows(held_out, **windows)

    # -- constants and state ---------------------------------------------------------------
    def constants(self):
        return {k: jnp.asarray(v) for k, v in self._constants.items()}

    def init_state(self, rng) -> A2EState:
        params = self.model.init(rng, jnp.zeros(self._mel_shape, jnp.float32),
                                 jnp.ones(self._mel_shape[:2], bool))["params"]
        return A2EState(step=jnp.zeros((), jnp.int32), params=params, opt=self.tx.init(params))

    # -- data ------------------------------------------------------------------------------
    def example_spec(self) -> dict:
        """{key: (shape, dtype)} of one example (data_pipelines/a2e_windows.py): the window's W
        mel windows [W, 80, M] and fitted expressions [W, E] (float32), and which positions
        are in the clip [W]."""
        w, e = self.window, self.expression_dim
        spec = {"mel": ((w, 80, self.mel_columns), np.float32),
                "expression": ((w, e), np.float32), "valid": ((w,), bool)}
        return {**spec, **WINDOW_ROW_SPEC}

    def train_batches(self, *, seed: int, process_index: int, process_count: int):
        return make_window_batches(
            self.train_target, self.train_pseudo, global_batch=int(self.config.batch_size),
            pseudo_ratio=self.pseudo_ratio, seed=seed, process_index=process_index,
            process_count=process_count, num_epochs=None, shuffle=True,
            worker_count=int(self.config.data.workers))

    def eval_batches(self, *, process_index: int, process_count: int):
        return make_window_batches(
            self.eval_source, None, global_batch=int(self.config.batch_size), seed=0,
            process_index=process_index, process_count=process_count, num_epochs=1,
            shuffle=False, drop_remainder=False, worker_count=0)

    # -- steps (pure; jitted by the engine) ------------------------------------------------
    def losses(self, params, batch, rng, constants, *, train: bool) -> tuple[jax.Array, dict]:
        """(total loss, {name: value}) of one batch (module docstring)."""
        pred = self.model.apply({"params": params}, batch["mel"], batch["valid"], train=train,
                                rngs={"dropout": rng} if train else None)
        weight = batch["valid"].astype(jnp.float32) * batch["example_valid"][:, None]
        if self.config.loss.centre_only:
            weight = weight * jax.nn.one_hot(self.window // 2, self.window)[None]
        err = pred - batch["expression"]
        frames = jnp.maximum(jnp.sum(weight), 1.0)
        mse = jnp.sum(weight * jnp.mean(err * err, -1)) / frames
        mouth = jnp.einsum("bwe,ef,bwf->bw", err, constants["mouth_loss_gram"], err)
        mouth = jnp.sum(weight * mouth) / (frames * self.expression_dim)
        velocity = err[:, 1:] - err[:, :-1]
        pairs = weight[:, 1:] * weight[:, :-1]
        smooth = jnp.sum(pairs * jnp.mean(velocity * velocity, -1)) / jnp.maximum(
            jnp.sum(pairs), 1.0)
        weights = self.config.loss
        total = (weights.expression * mse + weights.mouth * mouth + weights.smooth * smooth)
        return total, {"loss": total, "mse": mse, "mouth": mouth, "smooth": smooth}

    def train_step(self, state: A2EState, batch, rng, constants):
        if self.augment is not None:
            augment_key, rng = jax.random.split(rng)
            batch = {**batch, "mel": augment_mel(augment_key, batch["example_id"], batch["mel"],
                                                 self.augment)}
        grad_fn = jax.grad(self.losses, has_aux=True)
        grads, metrics = grad_fn(state.params, batch, rng, constants, train=True)
        updates, opt = self.tx.update(grads, state.opt, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return A2EState(step=state.step + 1, params=params, opt=opt), metrics

    def _centre_prediction(self, state, batch):
        pred = self.model.apply({"params": state.params}, batch["mel"], batch["valid"],
                                train=False)
        c = self.window // 2
        return pred[:, c], batch["expression"][:, c]

    def eval_step(self, state, batch, constants) -> dict:
        """Sums over the batch's real examples (centre frames); the engine divides by count."""
        pred, true = self._centre_prediction(state, batch)
        weight = batch["example_valid"].astype(jnp.float32)
        err = pred - true
        mouth_ms = jnp.einsum("be,ef,bf->b", err, constants["mouth_gram"], err)
        mouth_rms = jnp.sqrt(jnp.maximum(mouth_ms, 0.0))
        zp = (pred - constants["expr_mean"]) / constants["expr_std"]
        zt = (true - constants["expr_mean"]) / constants["expr_std"]
        # The held-out mouth's range of motion, predicted against fitted: RMS mouth-weighted
        # deviation from the training mean (finalize_eval: mouth_range_ratio).
        centred_p, centred_t = pred - constants["expr_mean"], true - constants["expr_mean"]
        sums = {"range_p": jnp.einsum("be,ef,bf->b", centred_p, constants["mouth_gram"],
                                      centred_p),
                "range_t": jnp.einsum("be,ef,bf->b", centred_t, constants["mouth_gram"],
                                      centred_t),
                "mse": jnp.mean(err * err, -1), "mouth_rms": mouth_rms,
                "mouth_rms_mm": mouth_rms * self.mm_per_unit,
                "corr_p": jnp.mean(zp, -1), "corr_t": jnp.mean(zt, -1),
                "corr_pp": jnp.mean(zp * zp, -1), "corr_tt": jnp.mean(zt * zt, -1),
                "corr_pt": jnp.mean(zp * zt, -1)}
        out = {k: jnp.sum(v * weight) for k, v in sums.items()}
        out["count"] = jnp.sum(weight)
        return out

    def finalize_eval(self, means: dict) -> dict:
        """The engine's per-frame means -> reported metrics (`pearson` from the moments)."""
        out = {k: v for k, v in means.items() if k not in MOMENT_KEYS + RANGE_KEYS}
        if all(k in means for k in MOMENT_KEYS):
            out["pearson"] = pearson_from_moments(means)
        if all(k in means for k in RANGE_KEYS):
            out["mouth_range_ratio"] = float(np.sqrt(max(float(means["range_p"]), 0.0) / max(
                float(means["range_t"]), 1e-12)))
        return out

    preview_labels = ("coefficients over the window: true green, predicted red",)

    def preview_step(self, state, batch, constants) -> jax.Array:
        """[B, P*(40+2), 160, 3] in [0, 1]: the first P coefficients over each example's window,
        true (green) and predicted (red), standardised, +-3 std full scale; columns of frames
        outside the clip are dark, the centre frame has a grey line."""
        pred = self.model.apply({"params": state.params}, batch["mel"], batch["valid"],
                                train=False)
        p = min(_PLOT_COEFFICIENTS, self.expression_dim)
        mean, std = constants["expr_mean"][:p], constants["expr_std"][:p]
        panels = []
        for k in range(p):
            true_hit = _curve_pixels((batch["expression"][..., k] - mean[k]) / std[k])
            pred_hit = _curve_pixels((pred[..., k] - mean[k]) / std[k])
            panels.append(_panel(true_hit, pred_hit, batch["valid"]))
        return jnp.concatenate(panels, axis=1)


def _curve_pixels(values) -> jax.Array:
    """bool [B, H, X]: pixels of the polyline through values [B, W] (+-3 mapped to the panel's
    bottom/top), drawn column by column as the vertical span to the next column's value."""
    w = values.shape[1]
    x = jnp.linspace(0.0, w - 1.0, _PANEL_WIDTH)
    i0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, max(w - 2, 0))
    i1 = jnp.minimum(i0 + 1, w - 1)
    t = x - i0
    v = values[:, i0] * (1 - t) + values[:, i1] * t                           # [B, X]
    y = (1.0 - (jnp.clip(v, -3.0, 3.0) + 3.0) / 6.0) * (_PANEL_HEIGHT - 1)
    y_next = jnp.concatenate([y[:, 1:], y[:, -1:]], axis=1)
    lo, hi = jnp.minimum(y, y_next) - 0.75, jnp.maximum(y, y_next) + 0.75
    rows = jnp.arange(_PANEL_HEIGHT, dtype=jnp.float32)[None, :, None]
    return (rows >= lo[:, None]) & (rows <= hi[:, None])


def _panel(true_hit, pred_hit, valid) -> jax.Array:
    """[B, H+2, X, 3]: background by frame validity, the two curves, a 2-pixel separator."""
    b, w = valid.shape
    x = jnp.linspace(0.0, w - 1.0, _PANEL_WIDTH)
    nearest = jnp.clip(jnp.round(x).astype(jnp.int32), 0, w - 1)
    inside = valid[:, nearest]                                                # [B, X]
    shade = jnp.where(inside, 0.18, 0.05)
    centre = jnp.abs(x - w // 2) < (w - 1.0) / (2 * _PANEL_WIDTH) + 1e-6
    shade = jnp.where(centre[None], 0.4, shade)
    image = jnp.broadcast_to(shade[:, None, :, None], (b, _PANEL_HEIGHT, _PANEL_WIDTH, 3))
    # Curves only over frames of the clip (positions outside hold zeros, not data).
    true_hit, pred_hit = (hit & inside[:, None, :] for hit in (true_hit, pred_hit))
    image = jnp.where(true_hit[..., None], jnp.asarray(_TRUE_RGB), image)
    image = jnp.where(pred_hit[..., None], jnp.maximum(image, jnp.asarray(_PRED_RGB)), image)
    separator = jnp.ones((b, 2, _PANEL_WIDTH, 3))
    return jnp.concatenate([image, separator], axis=1)


def placeholder_constants(expression_dim: int) -> dict:
    """The constants' shapes and dtypes ({name: float32 [E, E] or [E]}) with placeholder
    values, for a task built without its subject (shapes_only)."""
    e = int(expression_dim)
    return {"mouth_gram": np.zeros((e, e), np.float32),
            "mouth_loss_gram": np.zeros((e, e), np.float32),
            "expr_mean": np.zeros((e,), np.float32), "expr_std": np.ones((e,), np.float32)}


def mel_augmentation(config):
    """config.augment (train/mel_augment.py's settings) when it changes anything, else None
    (configs from before the field: None)."""
    settings = config.get("augment")
    if settings is None or not (settings.level_db or settings.warp_prob
                                or settings.reverb_prob or settings.noise_prob):
        return None
    return settings


def _optimizer(config) -> optax.GradientTransformation:
    """AdamW (Adam when weight_decay is 0) with optional clipping; cosine schedule with linear
    warmup over config.total_steps, or a constant learning rate (AudioDVP: Adam 1e-3)."""
    o = config.optim
    if o.schedule == "cosine":
        total = max(int(config.total_steps), int(o.warmup_steps) + 1)
        lr = optax.warmup_cosine_decay_schedule(0.0, float(o.lr), int(o.warmup_steps), total,
                                                end_value=float(o.lr) * 0.01)
    elif o.schedule == "constant":
        lr = float(o.lr)
    else:
        raise InputError(f"config.optim.schedule must be cosine or constant, got {o.schedule!r}")
    parts = [optax.clip_by_global_norm(float(o.grad_clip))] if o.grad_clip else []
    parts.append(optax.adamw(lr, weight_decay=float(o.weight_decay)))
    return optax.chain(*parts)
