"""Voices, levels and rooms the A2E has not heard: augmentations of its mel windows in training.

The A2E reads Wav2Lip's log-mel (media/audio_features.py): per mel band b and column t,
    n = clip(8 (S + 100) / 100 - 4, -4, 4),   S = 20 log10(max(1e-5, M)) - 20 dB,
M the band's linear magnitude. Each augmentation is a change of the sound written in that
domain, so it runs on device on the batch's mel [B, W, 80, C] with no audio in the step:

  level   S + g dB, g ~ U(-level_db, level_db): the same words louder or softer (exact, since
          M scales with the audio, except where S sits on the -100 dB floor). What is left of
          the level after the front end's loudness normalisation is the normalisation's own
          spread (short clips, shouts): a few dB.
  noise   M' = sqrt(M^2 + N^2), N a noise floor SNR ~ U(noise_snr_db) below the window's
          loudest band, a different random level per band and column (power adds for
          uncorrelated sounds): a fan, a street, a bad microphone.
  reverb  power smeared forward along the columns, P'[t] = sum_k P[t-k] d^k with d the
          per-column decay of a room whose RT60 ~ U(reverb_rt60_s) (60 dB per RT60): a hall.
  warp    the band axis stretched by a ~ U(1 - warp, 1 + warp), b' = b a (linear
          interpolation): a shorter or longer vocal tract, i.e. a higher or lower voice
          (vocal tract length perturbation, the ASR community's speaker augmentation).

Each example draws its own settings from (key, example_id), the same for all W frames of its
window (one speaker in one room); noise, reverb and warp each apply with their probability.
Tempo is not done here (it would move the audio against the frames' expressions): the
speaking-rate variety comes from the corpora (the viseme teacher's rates, LRS2's speakers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MEL_MAX = 4.0            # Wav2Lip's normalised range [-4, 4]
_DB_PER_UNIT = 12.5      # 100 dB over 8 units
_FLOOR_DB = -100.0
_REF_DB = 20.0


def mel_to_db(mel):
    """Normalised mel -> S in dB (20 log10 M - 20)."""
    return (mel + MEL_MAX) * _DB_PER_UNIT + _FLOOR_DB


def db_to_mel(db):
    """S in dB -> normalised mel, clipped to [-4, 4] as Wav2Lip's features are."""
    return jnp.clip((db - _FLOOR_DB) / _DB_PER_UNIT - MEL_MAX, -MEL_MAX, MEL_MAX)


def _magnitude(db):
    return 10.0 ** ((db + _REF_DB) / 20.0)


def _db(magnitude):
    return 20.0 * jnp.log10(jnp.maximum(magnitude, 1e-5)) - _REF_DB


def add_noise(key, db, snr_db):
    """[W, 80, C] dB with noise SNR dB below the loudest band, random per band and column (one
    noise spectrogram per example, the same behind its W frames: few random draws)."""
    peak = jnp.max(db)
    jitter = jax.random.uniform(key, db.shape[-2:], minval=-6.0, maxval=0.0)
    noise = _magnitude(peak - snr_db + jitter)
    return _db(jnp.sqrt(_magnitude(db) ** 2 + noise ** 2))


def add_reverb(db, rt60_s, column_s):
    """[W, 80, C] dB with each column's power decaying into the later ones (RT60 seconds):
    P'[t] = sum_{k <= t} P[k] d^(t - k), one [C, C] matrix product (no loop over columns)."""
    decay = 10.0 ** (-6.0 * column_s / rt60_s)            # power factor per column
    c = db.shape[-1]
    lag = jnp.arange(c)[None, :] - jnp.arange(c)[:, None]   # [k, t]: t - k
    smear = jnp.where(lag >= 0, decay ** jnp.maximum(lag, 0).astype(db.dtype), 0.0)
    return _db(jnp.sqrt(jnp.einsum("wbk,kt->wbt", _magnitude(db) ** 2, smear)))


def warp_bands(db, factor):
    """[W, 80, C] dB with band b taking the value at band b * factor (clamped at the top)."""
    bands = db.shape[-2]
    source = jnp.clip(jnp.arange(bands, dtype=jnp.float32) * factor, 0.0, bands - 1.0)
    lo = jnp.floor(source).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, bands - 1)
    t = (source - lo)[:, None]
    return db[..., lo, :] * (1.0 - t) + db[..., hi, :] * t


def augment_example(key, mel, settings, column_s: float):
    """One example's mel [W, 80, C] -> augmented (module docstring)."""
    keys = jax.random.split(key, 8)

    def uniform(k, bounds):
        return jax.random.uniform(k, (), minval=bounds[0], maxval=bounds[1])

    def coin(k, p):
        return jax.random.uniform(k) < p

    db = mel_to_db(mel)
    db = db + uniform(keys[0], (-settings.level_db, settings.level_db))
    if settings.warp_prob > 0:
        warped = warp_bands(db, uniform(keys[1], (1.0 - settings.warp, 1.0 + settings.warp)))
        db = jnp.where(coin(keys[2], settings.warp_prob), warped, db)
    if settings.reverb_prob > 0:
        rooms = add_reverb(db, uniform(keys[3], settings.reverb_rt60_s), column_s)
        db = jnp.where(coin(keys[4], settings.reverb_prob), rooms, db)
    if settings.noise_prob > 0:
        noisy = add_noise(keys[5], db, uniform(keys[6], settings.noise_snr_db))
        db = jnp.where(coin(keys[7], settings.noise_prob), noisy, db)
    return db_to_mel(db)


def augment_mel(key, example_id, mel, settings, column_s: float = 0.0125):
    """mel [B, W, 80, C] (normalised Wav2Lip log-mel) -> augmented, each example by its own
    draws from (key, example_id) (independent of the batch's layout over devices).

    settings: level_db, warp, warp_prob, reverb_rt60_s (lo, hi), reverb_prob, noise_snr_db
    (lo, hi), noise_prob (configs/a2e.py `augment`); column_s: seconds between mel columns."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(example_id)
    return jax.vmap(lambda k, m: augment_example(k, m, settings, column_s))(keys, mel)
