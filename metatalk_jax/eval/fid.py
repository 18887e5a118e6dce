"""Frechet Inception Distance as pytorch-fid computes it (mseitzer/pytorch-fid fid_score.py).

Protocol: frames (RGB uint8, any size) -> pytorch-fid's InceptionV3 pool_3 features [N,2048]
(metatalk_jax.models.inception: bilinear resize to 299 as torch, x -> 2x - 1) -> mean and
covariance in float64 (np.cov, rowvar=False: N-1 normalisation) -> Frechet distance of the two
Gaussians

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2))

with pytorch-fid's numerical handling: sqrtm (scipy.linalg, Schur method) of the product; if
that is not finite, eps * I is added to both covariances and the root retaken; a complex root is
accepted (its real part used) only when every diagonal imaginary part is within 1e-3 of 0,
otherwise ValueError. Its figures therefore agree with pytorch-fid's given the same weights
(pt_inception-2015-12-05-6726825d.pth, converted with `python -m metatalk_jax.convert
inception`). Note FID is biased by sample size: compare FIDs computed from equal frame counts.

Per video (Meta Talk's Table 2 reports FID per test audio, then the mean): `fid_per_video`
pairs each generated video with its reference video and returns one FID each.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import linalg

from metatalk_jax.atomic_files import write_npz
from metatalk_jax.errors import InputError
from metatalk_jax.models.inception import inception_features

IMAGINARY_TOLERANCE = 1e-3       # pytorch-fid's atol on the root's diagonal imaginary parts


def activation_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu [D] float64, sigma [D,D] float64) of features [N,D]: mean and np.cov(rowvar=False)."""
    mu, _ = _checked_mean(features)
    return mu, np.cov(np.asarray(features, np.float64), rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # scipy warns (LinAlgWarning/RuntimeWarning) on singular products; pytorch-fid silenced the
    # same warning with disp=False (deprecated since SciPy 1.16) and inspects the result instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return linalg.sqrtm(matrix)


def trace_sqrt_product_psd(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrtm(S1 S2)) for symmetric PSD S1, S2 via eigh: S1 S2 is similar to
    sqrt(S1) S2 sqrt(S1), which is symmetric PSD, so the trace is the sum of the square roots of
    its eigenvalues (round-off negatives clipped to 0). Symmetric eigensolvers only: about half
    the time of sqrtm's Schur route at D=2048 (70 s vs 146 s on a shared 2-core CPU)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, *,
                     method: str = "sqrtm") -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    mu: [D]; sigma: [D,D] (float64 recommended). method "sqrtm" (default) is pytorch-fid's
    computation and handling, bit for bit in its choices; it raises ValueError when the matrix
    root keeps a diagonal imaginary part above 1e-3. method "eigh" takes tr(sqrtm(S1 S2)) from
    `trace_sqrt_product_psd` (valid for covariances, i.e. symmetric PSD; never complex, no eps):
    use it when many 2048-d FIDs make sqrtm's minutes per call too slow.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"FID: mean vectors differ in length: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"FID: covariances {sigma1.shape} and {sigma2.shape} do not match "
                         f"means of length {mu1.shape[0]}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                     - 2.0 * trace_sqrt_product_psd(sigma1, sigma2))
    if method != "sqrtm":
        raise ValueError(f"FID: method must be 'sqrtm' or 'eigh', got {method!r}")
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_TOLERANCE):
            worst = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"FID: sqrtm(sigma1 @ sigma2) has an imaginary component of "
                             f"{worst:.3g} (> {IMAGINARY_TOLERANCE} on the diagonal)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(features_a, features_b, eps: float = 1e-6, *,
                      method: str = "sqrtm") -> float:
    """FID between two feature sets [Na,D] and [Nb,D].

    method "sqrtm" / "eigh": through the statistics (see frechet_distance). method "svd": from
    the centred features directly, with no D x D root: writing S = U^T U with U = centred
    features / sqrt(N-1), S1 S2 has the nonzero eigenvalues of (U1 U2^T)(U1 U2^T)^T, so
    tr(sqrtm(S1 S2)) is the sum of the singular values of U1 U2^T [Na,Nb]. Exact in exact
    arithmetic and milliseconds for per-video sets (N of a few hundred frames < D = 2048).
    """
    if method != "svd":
        return frechet_distance(*activation_statistics(features_a),
                                *activation_statistics(features_b), eps=eps, method=method)
    mu1, _ = _checked_mean(features_a)
    mu2, _ = _checked_mean(features_b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"FID: feature sizes differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    u1 = (a - mu1) / np.sqrt(len(a) - 1)
    u2 = (b - mu2) / np.sqrt(len(b) - 1)
    diff = mu1 - mu2
    nuclear = np.sum(np.linalg.svd(u1 @ u2.T, compute_uv=False))
    return float(diff @ diff + np.sum(u1 * u1) + np.sum(u2 * u2) - 2.0 * nuclear)


def _checked_mean(features) -> tuple[np.ndarray, int]:
    act = np.asarray(features, np.float64)
    if act.ndim != 2:
        raise ValueError(f"features must be [N,D], got shape {act.shape}")
    if act.shape[0] < 2:
        raise ValueError(f"FID statistics need at least 2 feature rows, got {act.shape[0]}")
    return act.mean(axis=0), act.shape[0]


def frames_features(frames, variables, *, batch_size: int = 16) -> np.ndarray:
    """Inception pool_3 features [N,2048] of frames: one array [N,H,W,3] (uint8 RGB, or float in
    [0,1]) or an iterable of such arrays (e.g. decoded chunks of one video, sizes may differ)."""
    if isinstance(frames, np.ndarray) or hasattr(frames, "shape"):
        return inception_features(frames, variables, batch_size=batch_size)
    parts = [inception_features(chunk, variables, batch_size=batch_size) for chunk in frames]
    if not parts:
        raise ValueError("no frames to compute Inception features of")
    return np.concatenate(parts)


def fid_from_frames(frames_a, frames_b, variables, *, batch_size: int = 16,
                    eps: float = 1e-6, method: str = "sqrtm") -> float:
    """FID between two frame sets ([N,H,W,3] arrays or iterables of them; see frames_features).

    variables: converted pytorch-fid Inception weights (`load_inception`). method: "sqrtm"
    (pytorch-fid's, minutes per call at D=2048 on a small CPU), "eigh" or "svd" (fast when the
    sets have fewer frames than 2048); see fid_from_features.
    """
    return fid_from_features(frames_features(frames_a, variables, batch_size=batch_size),
                             frames_features(frames_b, variables, batch_size=batch_size),
                             eps=eps, method=method)


def fid_per_video(generated: Sequence, reference: Sequence, variables, *,
                  batch_size: int = 16, method: str = "sqrtm") -> list[float]:
    """One FID per (generated video, reference video) pair; each video is [T,H,W,3] frames or an
    iterable of frame chunks. The lists must have equal length."""
    if len(generated) != len(reference):
        raise ValueError(f"fid_per_video: {len(generated)} generated videos but "
                         f"{len(reference)} reference videos")
    return [fid_from_frames(g, r, variables, batch_size=batch_size, method=method)
            for g, r in zip(generated, reference)]


def save_statistics(path, mu, sigma) -> None:
    """Writes {mu, sigma} as an .npz readable by pytorch-fid (`fid_score.py a.npz b.npz`)."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != mu.shape * 2:
        raise ValueError(f"{path}: statistics need mu [D] and sigma [D,D], got {mu.shape} and "
                         f"{sigma.shape}")
    write_npz(path, mu=mu, sigma=sigma)


def load_statistics(path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from an .npz with keys mu and sigma (ours or pytorch-fid's)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
    except KeyError:
        raise InputError(f"{path}: FID statistics need arrays 'mu' and 'sigma'") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable FID statistics: {error}") from None
    if mu.ndim != 1 or sigma.shape != mu.shape * 2:
        raise InputError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return mu, sigma

