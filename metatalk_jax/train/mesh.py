"""The device mesh and the shardings of batches and train state.

The mesh has two axes: `data` (pure data parallelism: every device of a row holds the same
parameters) and `fsdp` (parameters, gradients and optimiser state of large leaves are split over
it; the batch is split over both axes, so with `fsdp` > 1 it is ZeRO-3 style sharding). Under
`jax.jit` with these shardings XLA inserts the collectives; the code of a step is written as if
for one device (this is "pjit"). BatchNorm statistics are means over the *global* batch for the
same reason, so sharded and single-device training agree.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from metatalk_jax.errors import InputError

DATA, FSDP = "data", "fsdp"
BATCH_AXES = (DATA, FSDP)


def make_mesh(mesh_config, devices=None) -> Mesh:
    """A [data, fsdp] mesh over all devices (of every process), or over `devices`.

    mesh_config.fsdp: size of the fsdp axis (1 = pure data parallel); mesh_config.num_devices:
    0 = all devices, else the first n (tests compare 1 device against 8). The data axis takes
    the rest. Devices are ordered process by process, so each process's devices form
    contiguous rows: process p's local batch is rows [p*L, (p+1)*L) of the global batch.
    """
    if devices is None:
        devices = jax.devices()
        n = int(mesh_config.get("num_devices", 0) or 0)
        if n:
            if n > len(devices):
                raise InputError(f"mesh.num_devices={n} but only {len(devices)} devices exist")
            devices = devices[:n]
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    fsdp = int(mesh_config.get("fsdp", 1) or 1)
    if len(devices) % fsdp:
        raise InputError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} devices")
    grid = np.array(devices, dtype=object).reshape(len(devices) // fsdp, fsdp)
    return Mesh(grid, BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leaf_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """FSDP rule for one leaf: split the largest dimension that `fsdp_size` divides, over
    `fsdp`, when the leaf has at least `min_size` elements; otherwise replicate (small leaves
    such as biases and BatchNorm scales are not worth a collective)."""
    if fsdp_size <= 1 or not shape or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[dim] = FSDP
            return P(*spec)
    return P()


def state_shardings(abstract_state, mesh: Mesh, min_fsdp_size: int = 2 ** 16):
    """Shardings for a train-state pytree of ShapeDtypeStructs (from jax.eval_shape)."""
    fsdp_size = mesh.shape[FSDP]
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, leaf_spec(tuple(leaf.shape), fsdp_size, min_fsdp_size)),
        abstract_state)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Per-process numpy batch [L, ...] -> global jax arrays [L * process_count, ...] sharded
    over the mesh (each process contributes its rows; nothing crosses hosts here)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                        local_batch)
