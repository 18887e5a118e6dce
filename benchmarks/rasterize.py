"""Benchmark of metatalk_jax.face3d.raster.rasterize on a BFM-size face mesh.

For each (image size, batch) it times, in the same process and interleaved repeat by repeat:
  fwd      jit(rasterize) -> Fragments (ids, depth, barycentrics), blocked until ready;
  fwd_bwd  jit(grad(sum(barycentric * Wb) + sum(depth * Wd))) w.r.t. the vertices, fixed random
           weights Wb, Wd (the forward pass is part of it);
  ref      the compiled single-thread numba z-buffer of benchmarks/zbuffer_reference.py (ids and
           depth only), called once per image of the batch.
Compilation and one warm-up round are excluded; each figure is the median over the repeats,
divided by the batch (milliseconds per image).

The mesh is procedural_model(189, 189) (35,721 vertices / 70,688 triangles, no download) or,
with --mesh offline, the mean shape of the offline BFM-derived model (35,444 / 70,470). It is
placed with a fixed orthographic mapping (x right, y down = -model y, depth = 10 - model z),
scaled so that about --coverage of the image is covered (the measured coverage is printed);
each image of a batch gets its own sub-pixel shift so the batch is not one image repeated.

--batch-modes batched map adds, for batches > 1, rows where the batch is rasterized one image at
a time (jax.lax.map of single-image calls inside the same jit) for comparison.

Output: a human-readable table, then as the last line one JSON object
  {"bench": "rasterize", "machine": "...", "mesh": "...", "results": [{"size": 224, "batch": 1,
   "batch_mode": "batched", "fwd_ms": ..., "fwd_bwd_ms": ..., "ref_ms": ..., "coverage": ...,
   "fwd_over_ref": ..., "bwd_ratio": ..., "fwd_images_per_s": ..., "id_agreement": ...,
   "repeats": ..., "compile_s": ...}, ...]}
(ms per image; bwd_ratio = fwd_bwd_ms / fwd_ms; id_agreement = share of foreground pixels of the
first image where the JAX and reference triangle ids agree).

Run from the repository root:  python benchmarks/rasterize.py
GPU example:                    python benchmarks/rasterize.py --sizes 256 --batches 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

if __package__ in (None, ""):            # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax                                # noqa: E402
import jax.numpy as jnp                   # noqa: E402

from benchmarks import machine_info     # noqa: E402
from benchmarks.zbuffer_reference import zbuffer_reference  # noqa: E402
from metatalk_jax.face3d import raster   # noqa: E402


# -- mesh ----------------------------------------------------------------------------------------

def load_mesh(kind: str):
    """(mean_shape [V,3] float32, faces [F,3] int32, description)."""
    if kind == "procedural":
        from metatalk_jax.face3d.procedural import procedural_model
        model = procedural_model(189, 189)
    elif kind == "offline":
        from metatalk_jax.face3d import assets
        from metatalk_jax.face3d.morphable import load_npz
        # Any cached convention will do (the placement below normalises scale and centre);
        # build the default one only if none is cached.
        cached = [assets.offline_model_path(c) for c in ("audiodvp", "deep3d")]
        cached = [p for p in cached if os.path.isfile(p)]
        model = load_npz(cached[0] if cached else assets.ensure_offline_model())
    else:
        raise ValueError(f"unknown mesh {kind!r}")
    verts = np.asarray(model.mean_shape, np.float32)
    faces = np.asarray(model.triangles, np.int32)
    return verts, faces, f"{model.name} ({verts.shape[0]} vertices, {faces.shape[0]} triangles)"


def place(mean_shape, size: int, scale: float):
    """Pixel-space vertices [V,3]: centred, x right, y down, depth 10 - z, `scale` px per unit."""
    lo, hi = mean_shape[:, :2].min(0), mean_shape[:, :2].max(0)
    centre = 0.5 * (lo + hi)
    x = 0.5 * size + scale * (mean_shape[:, 0] - centre[0])
    y = 0.5 * size - scale * (mean_shape[:, 1] - centre[1])
    z = 10.0 - mean_shape[:, 2]
    return np.stack([x, y, z], 1).astype(np.float32)


def calibrate_scale(mean_shape, faces, size: int, coverage: float):
    """Pixels per model unit so that about `coverage` of a size x size image is covered."""
    extent = float((mean_shape[:, :2].max(0) - mean_shape[:, :2].min(0)).max())
    scale = 0.8 * size / extent
    for _ in range(3):                    # area ~ scale^2; converges in a step or two
        tid, _ = zbuffer_reference(place(mean_shape, size, scale), faces, size, size)
        measured = float(np.mean(tid >= 0))
        scale *= (coverage / measured) ** 0.5
    return scale


def batch_vertices(mean_shape, size: int, scale: float, batch: int, seed: int = 0):
    """[B, V, 3]: the placed mesh with a per-image sub-pixel shift (and small depth offset)."""
    base = place(mean_shape, size, scale)
    rng = np.random.default_rng(seed)
    shift = rng.uniform(-0.5, 0.5, size=(batch, 1, 3)).astype(np.float32)
    shift[..., 2] *= 0.01
    return base[None] + shift


# -- timing --------------------------------------------------------------------------------------

def _time(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench_config(mean_shape, faces, size: int, batch: int, coverage_target: float,
                 repeats: int, budget_s: float, batch_mode: str = "batched", seed: int = 0):
    scale = calibrate_scale(mean_shape, faces, size, coverage_target)
    verts_np = batch_vertices(mean_shape, size, scale, batch, seed)
    verts = jnp.asarray(verts_np)
    faces_j = jnp.asarray(faces)
    rng = np.random.default_rng(seed + 1)
    w_bary = jnp.asarray(rng.standard_normal((batch, size, size, 3)).astype(np.float32))
    w_depth = jnp.asarray(rng.standard_normal((batch, size, size)).astype(np.float32))

    def render(v):
        if batch_mode == "map":           # one image at a time inside the compiled program
            frags = jax.lax.map(lambda x: raster.rasterize(x[None], faces_j, (size, size)), v)
            return raster.Fragments(*(x[:, 0] for x in frags))
        return raster.rasterize(v, faces_j, (size, size))

    fwd = jax.jit(render)

    def loss(v, wb, wd):
        frags = render(v)
        return jnp.sum(frags.barycentric * wb) + jnp.sum(frags.depth * wd)

    fwd_bwd = jax.jit(jax.grad(loss))

    def run_fwd():
        jax.block_until_ready(fwd(verts))

    def run_fwd_bwd():
        jax.block_until_ready(fwd_bwd(verts, w_bary, w_depth))

    def run_ref():
        for b in range(batch):
            zbuffer_reference(verts_np[b], faces, size, size)

    # Compile, check agreement with the reference, then one untimed warm-up round.
    t0 = time.perf_counter()
    frags = jax.block_until_ready(fwd(verts))
    grads = jax.block_until_ready(fwd_bwd(verts, w_bary, w_depth))
    compile_s = time.perf_counter() - t0
    assert np.all(np.isfinite(np.asarray(grads))), "non-finite vertex gradients"
    ref_tid, _ = zbuffer_reference(verts_np[0], faces, size, size)
    got = np.asarray(frags.triangle_id[0])
    fg = (got >= 0) | (ref_tid >= 0)
    agreement = float(np.mean(got[fg] == ref_tid[fg]))
    coverage = float(np.mean(np.asarray(frags.triangle_id) >= 0))
    warm = _time(run_fwd) + _time(run_fwd_bwd) + _time(run_ref)

    # Fewer repeats (at least 3) when one round would blow the per-config time budget.
    n = max(3, min(repeats, int(budget_s * 1e3 / max(warm, 1e-3))))
    times = {"fwd": [], "fwd_bwd": [], "ref": []}
    for _ in range(n):                    # interleaved: load changes hit all three alike
        times["fwd"].append(_time(run_fwd))
        times["fwd_bwd"].append(_time(run_fwd_bwd))
        times["ref"].append(_time(run_ref))
    med = {k: statistics.median(v) / batch for k, v in times.items()}
    return {
        "size": size, "batch": batch, "batch_mode": batch_mode,
        "fwd_ms": round(med["fwd"], 3),
        "fwd_bwd_ms": round(med["fwd_bwd"], 3),
        "ref_ms": round(med["ref"], 3),
        "coverage": round(coverage, 4),
        "fwd_over_ref": round(med["fwd"] / med["ref"], 2),
        "bwd_ratio": round(med["fwd_bwd"] / med["fwd"], 2),
        "fwd_images_per_s": round(1e3 / med["fwd"], 1),
        "id_agreement": round(agreement, 5),
        "repeats": n,
        "compile_s": round(compile_s, 1),
    }


# -- report --------------------------------------------------------------------------------------

def machine_description(extra: str | None) -> str:
    import numba
    return machine_info.machine_description({"numba": numba.__version__}, extra)


def format_table(results) -> str:
    head = (f"{'size':>5} {'batch':>5} {'mode':>7} {'cover':>6} {'fwd ms':>9} {'fwd+bwd ms':>11} "
            f"{'ref ms':>8} {'fwd/ref':>8} {'bwd/fwd':>8} {'fwd img/s':>10} {'ids=ref':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['size']:>5} {r['batch']:>5} {r['batch_mode']:>7} {r['coverage']:>6.3f} "
                     f"{r['fwd_ms']:>9.2f} "
                     f"{r['fwd_bwd_ms']:>11.2f} {r['ref_ms']:>8.2f} {r['fwd_over_ref']:>8.1f} "
                     f"{r['bwd_ratio']:>8.2f} {r['fwd_images_per_s']:>10.1f} "
                     f"{r['id_agreement']:>8.4f}")
    lines.append("(ms are per image: median time of one batched call / batch)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 256, 512, 1024],
                   help="square image sizes (default: 224 256 512 1024)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8],
                   help="batch sizes (default: 1 8)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per config (median)")
    p.add_argument("--budget-s", type=float, default=40.0,
                   help="per-config time budget for the timed repeats; fewer repeats (>= 3) "
                        "when one round is slower than budget/repeats")
    p.add_argument("--mesh", choices=["procedural", "offline"], default="procedural")
    p.add_argument("--batch-modes", choices=["batched", "map"], nargs="+", default=["batched"],
                   help="batched: one rasterize call on [B,V,3] (default); map: jax.lax.map "
                        "of single-image calls over the batch inside the same jit, for "
                        "comparison (skipped for batch 1, where it is the same program)")
    p.add_argument("--coverage", type=float, default=0.4, help="target covered image fraction")
    p.add_argument("--device-info", default=None,
                   help="free text added to the machine description (e.g. '1x H100 80GB')")
    args = p.parse_args(argv)

    mean_shape, faces, mesh_name = load_mesh(args.mesh)
    machine = machine_description(args.device_info)
    print(f"machine: {machine}")
    print(f"mesh: {mesh_name}, target coverage {args.coverage:.0%}", flush=True)
    results = []
    t_start = time.perf_counter()
    for size in args.sizes:
        for batch, mode in [(b, m) for b in args.batches for m in args.batch_modes
                            if not (m == "map" and b == 1)]:
            r = bench_config(mean_shape, faces, size, batch, args.coverage, args.repeats,
                             args.budget_s, mode)
            print(f"  {size}x{size} batch {batch} ({mode}): coverage {r['coverage']:.3f}, "
                  f"fwd {r['fwd_ms']:.2f} ms/img, fwd+bwd {r['fwd_bwd_ms']:.2f} ms/img, "
                  f"ref {r['ref_ms']:.2f} ms/img, ids agree with ref on "
                  f"{r['id_agreement']:.2%} of foreground, {r['repeats']} repeats, "
                  f"compile {r['compile_s']:.1f} s", flush=True)
            results.append(r)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    print(format_table(results))
    print(json.dumps({"bench": "rasterize", "machine": machine, "mesh": mesh_name,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
