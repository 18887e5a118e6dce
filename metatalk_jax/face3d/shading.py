"""Spherical-harmonics (9-band) Lambertian shading, as AudioDVP and Deep3DFaceRecon use it.

colour = albedo * (Y(n) . gamma), with Y the 9 SH basis functions of the unit normal scaled by
the Lambertian kernel (a_l) and normalisation (c_l) constants below.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

# Lambertian convolution constants a_l and SH normalisation constants c_l for bands 0, 1, 2.
A0, A1, A2 = math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0)
C0, C1, C2 = 1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi), \
    3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)


def sh_basis(normals):
    """The 9 scaled SH basis values of unit normals: [..., 3] -> [..., 9]."""
    nx, ny, nz = normals[..., 0], normals[..., 1], normals[..., 2]
    return jnp.stack([
        jnp.full_like(nx, A0 * C0),
        -A1 * C1 * ny,
        A1 * C1 * nz,
        -A1 * C1 * nx,
        A2 * C2 * nx * ny,
        -A2 * C2 * ny * nz,
        0.5 * A2 * C2 / math.sqrt(3.0) * (3.0 * nz ** 2 - 1.0),
        -A2 * C2 * nx * nz,
        0.5 * A2 * C2 * (nx ** 2 - ny ** 2),
    ], axis=-1)


def sh_lighting(gamma, layout: str, init_light: float):
    """27 lighting coefficients per image -> [B, 9, 3] (band, RGB channel).

    layout "9x3" (AudioDVP): gamma.reshape(9, 3); "3x9" (Deep3DFaceRecon): gamma.reshape(3, 9)
    then transposed. `init_light` is added to the DC band of every channel.
    """
    batch = gamma.shape[0]
    if layout == "9x3":
        light = gamma.reshape(batch, 9, 3)
    elif layout == "3x9":
        light = jnp.swapaxes(gamma.reshape(batch, 3, 9), 1, 2)
    else:
        raise ValueError(f"unknown SH layout {layout!r}")
    return light.at[:, 0, :].add(init_light)


def sh_shade(albedo, normals, gamma, layout: str = "9x3", init_light: float = 0.7):
    """Per-vertex colour: albedo [B, V, 3] * (Y(normals [B, V, 3]) @ lighting) -> [B, V, 3]."""
    light = sh_lighting(gamma, layout, init_light)
    return albedo * jnp.einsum("bvk,bkc->bvc", sh_basis(normals), light)
