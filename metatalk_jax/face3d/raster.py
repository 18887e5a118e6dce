"""Differentiable triangle rasterizer in pure JAX (runs under jit/vmap/grad on CPU, GPU, TPU).

Semantics follow tf_mesh_renderer (as used by AudioDVP): a hard z-buffer picks one triangle per
pixel with no gradient, then the winning triangle's barycentric coordinates are recomputed
differentiably from the vertex positions, so gradients reach the vertices through the
barycentrics only. `antialias.py` adds optional silhouette gradients.

Coordinates (the public contract): vertices are in pixel units, x to the right, y down; the pixel
in row i, column j has its centre at (x, y) = (j + 0.5, i + 0.5); z is depth, smaller is nearer.
Triangles of either winding are drawn (no culling).

How the cost follows the covered pixels, not pixels x triangles:
- Each triangle is turned once into plane equations (barycentrics and depth as affine functions
  of the pixel offset from its first vertex), so testing a pixel is a handful of multiply-adds.
- Direct pass: every triangle tests the `tile` x `tile` pixel centres at the top-left of its
  bounding box, fully vectorised over triangles. With `tile` near the typical triangle size
  (`default_tile`: 1 px at 224-256, 2 at 512, 4 at 1024 for a 70k-triangle face) this covers
  nearly all the work.
- Overflow pass: the rest of larger bounding boxes is cut into `tile`-sized tiles; a prefix sum
  over per-triangle tile counts makes one flat work list, processed in fixed-size chunks by a
  while loop whose trip count follows the data (a triangle covering the whole frame costs its
  area, a sub-pixel one nothing).
- Each pass scatter-mins candidate depths into a z-buffer; a second sweep over the same
  candidates scatters the id of the triangle that owns each pixel's minimum.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metatalk_jax.compile_target import target_platform

_EDGE_EPS = 1e-6


class Fragments(NamedTuple):
    """Per-pixel rasterization result.

    triangle_id: [B, H, W] int32, index into `faces`; -1 where no triangle covers the pixel.
    depth:       [B, H, W] float32, interpolated z of the visible surface; 0 on background.
    barycentric: [B, H, W, 3] float32, weights of the triangle's 3 vertices; 0 on background.
    """

    triangle_id: jax.Array
    depth: jax.Array
    barycentric: jax.Array

    @property
    def mask(self) -> jax.Array:
        """[B, H, W] bool, True where a triangle covers the pixel."""
        return self.triangle_id >= 0


def triangle_planes(corners, perspective_correct: bool):
    """Per-triangle plane equations of barycentrics and depth in screen space.

    Args:
      corners: [..., 3, 3] triangle corners (x, y, z) in pixels / depth.
    Returns:
      [..., 10] float: origin (x0, y0); d(b0)/dx, d(b0)/dy, d(b1)/dx, d(b1)/dy (b2 = 1-b0-b1);
      the interpolated quantity s at the origin and ds/dx, ds/dy, where s = z (screen mode) or
      s = 1/z (perspective mode, affine in screen space); and the triangle's doubled signed area
      (0 = degenerate). Barycentrics at pixel p: b0 = 1 + g0 . (p - v0), b1 = g1 . (p - v0).
    """
    x, y, z = corners[..., 0], corners[..., 1], corners[..., 2]
    # d w_i / dx = y_j - y_k and d w_i / dy = x_k - x_j for (i, j, k) cyclic; w_i / area = b_i.
    area = ((x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0])
            - (x[..., 2] - x[..., 0]) * (y[..., 1] - y[..., 0]))
    inv = 1.0 / jnp.where(area == 0, 1.0, area)
    g0x, g0y = (y[..., 1] - y[..., 2]) * inv, (x[..., 2] - x[..., 1]) * inv
    g1x, g1y = (y[..., 2] - y[..., 0]) * inv, (x[..., 0] - x[..., 2]) * inv
    s = 1.0 / z if perspective_correct else z
    ds1, ds2 = s[..., 1] - s[..., 0], s[..., 2] - s[..., 0]
    # s = s0 + b1 (s1 - s0) + b2 (s2 - s0) with b2 = 1 - b0 - b1 and b0 - 1 = g0 . d.
    sx = g1x * ds1 + (-g0x - g1x) * ds2
    sy = g1y * ds1 + (-g0y - g1y) * ds2
    return jnp.stack([x[..., 0], y[..., 0], g0x, g0y, g1x, g1y, s[..., 0], sx, sy, area], -1)


def _evaluate_planes(planes, px, py, perspective_correct: bool):
    """Barycentrics [..., 3], depth [...] and inside flag [...] at pixel centres (px, py)."""
    dx = px - planes[..., 0]
    dy = py - planes[..., 1]
    b0 = 1.0 + planes[..., 2] * dx + planes[..., 3] * dy
    b1 = planes[..., 4] * dx + planes[..., 5] * dy
    b2 = 1.0 - b0 - b1
    s = planes[..., 6] + planes[..., 7] * dx + planes[..., 8] * dy
    # A few ulps of slack so pixel centres lying exactly on an edge are not lost to rounding
    # (tf_mesh_renderer as patched by AudioDVP uses the same idea against "salt-and-pepper").
    inside = (planes[..., 9] != 0) & (b0 >= -_EDGE_EPS) & (b1 >= -_EDGE_EPS) & (b2 >= -_EDGE_EPS)
    depth = 1.0 / jnp.where(s == 0, 1.0, s) if perspective_correct else s
    return jnp.stack([b0, b1, b2], -1), depth, inside


class _Candidates(NamedTuple):
    """The pixel tests of a triangle list, in chunks (the direct pass's, then the overflow's):
    chunk(j) -> flat (pixel, depth, owner) of chunk j, pixel = num_pixels where the test fails
    (the scatters drop it); count: the number of chunks (traced: the overflow follows the data)."""

    chunk: object
    count: jax.Array
    num_pixels: int


def _candidates(verts, faces, height, width, perspective_correct, near, tile, budget):
    """The candidate (pixel, depth, triangle) tests of `verts` [B, V, 3] (pixel space) against
    `faces` [F, 3]: owners are ids into the flattened [B*F] triangle list."""
    batch = verts.shape[0]
    num_faces = faces.shape[0]
    n = batch * num_faces
    num_pixels = batch * height * width

    corners = verts[:, faces].reshape(n, 3, 3)               # [B*F, 3 corners, xyz]
    planes = triangle_planes(corners, perspective_correct)
    tx, ty = corners[..., 0], corners[..., 1]
    usable = jnp.all(jnp.isfinite(corners), axis=(1, 2)) & (planes[:, 9] != 0)
    if perspective_correct:
        usable &= jnp.all(corners[..., 2] > near, axis=-1)

    # Pixel columns/rows whose centres can lie inside the triangle's bounding box.
    c0 = jnp.clip(jnp.ceil(jnp.min(tx, -1) - 0.5), 0, width).astype(jnp.int32)
    c1 = jnp.clip(jnp.floor(jnp.max(tx, -1) - 0.5), -1, width - 1).astype(jnp.int32)
    r0 = jnp.clip(jnp.ceil(jnp.min(ty, -1) - 0.5), 0, height).astype(jnp.int32)
    r1 = jnp.clip(jnp.floor(jnp.max(ty, -1) - 0.5), -1, height - 1).astype(jnp.int32)
    usable &= (c1 >= c0) & (r1 >= r0)
    c1 = jnp.where(usable, c1, -1)                            # empty box: nothing is tested
    image_of = jnp.arange(n, dtype=jnp.int32) // num_faces

    # Overflow work list: the tiles of each box after the first (tested by the direct pass).
    tiles_x = (c1 - c0 + tile) // tile
    extra = jnp.where(usable, tiles_x * ((r1 - r0 + tile) // tile) - 1, 0)
    ends = jax.lax.associative_scan(jnp.add, extra)           # inclusive prefix sum
    total = ends[-1]

    chunk = max(1, min(n, budget // (tile * tile)))
    direct_chunks = -(-n // chunk)
    overflow_chunks = (total + chunk - 1) // chunk
    d = jnp.arange(tile, dtype=jnp.int32)

    def test_tiles(t, col, row, valid):
        """Candidates of the tiles at (col, row) of triangles t: flat pixel, depth, owner."""
        px = col[:, None, None] + d[None, None, :]
        py = row[:, None, None] + d[None, :, None]
        in_box = (px <= c1[t][:, None, None]) & (py <= r1[t][:, None, None]) & valid[:, None, None]
        _, depth, inside = _evaluate_planes(planes[t][:, None, None, :],
                                            px.astype(planes.dtype) + 0.5,
                                            py.astype(planes.dtype) + 0.5, perspective_correct)
        pixel = (image_of[t][:, None, None] * height + py) * width + px
        pixel = jnp.where(in_box & inside, pixel, num_pixels)
        owner = jnp.broadcast_to(t[:, None, None], pixel.shape)
        return pixel.reshape(-1), depth.reshape(-1), owner.reshape(-1)

    def direct(j):
        # Contiguous triangles [j*chunk, (j+1)*chunk): the first tile of each bounding box.
        t = jnp.minimum(j * chunk + jnp.arange(chunk, dtype=jnp.int32), n - 1)
        valid = (j * chunk + jnp.arange(chunk)) < n
        return test_tiles(t, c0[t], r0[t], valid)

    def overflow(j):
        k = j * chunk + jnp.arange(chunk, dtype=jnp.int32)     # work-item ids
        t = jnp.minimum(jnp.searchsorted(ends, k, side="right"), n - 1).astype(jnp.int32)
        local = k - (ends[t] - extra[t]) + 1                   # tile index within the box
        col = c0[t] + (local % tiles_x[t]) * tile
        row = r0[t] + (local // tiles_x[t]) * tile
        return test_tiles(t, col, row, k < total)

    def chunk_tests(j):
        return jax.lax.cond(j < direct_chunks, direct, lambda j: overflow(j - direct_chunks), j)

    return _Candidates(chunk_tests, direct_chunks + overflow_chunks, num_pixels)


def _visibility(verts, faces, height, width, perspective_correct, near, tile, budget):
    """Hard z-buffer: the winning triangle per pixel, no gradient.

    verts: [B, V, 3] pixel-space vertices. Returns [B*H*W] int32 ids into the flattened
    [B*F] triangle list, -1 on background.
    """
    tests = _candidates(verts, faces, height, width, perspective_correct, near, tile, budget)

    def min_depth(buffers, pixel, depth, owner):
        zbuf, idbuf = buffers
        return zbuf.at[pixel].min(depth, mode="drop"), idbuf

    def owner_id(buffers, pixel, depth, owner):
        zbuf, idbuf = buffers
        best = zbuf.at[pixel].get(mode="fill", fill_value=0.0)   # dropped candidates: unused
        # Both sweeps compute the same depth, but XLA may round a fused expression differently
        # in the two places; a relative tolerance of a few ulps keeps every pixel owned.
        tol = 4 * jnp.finfo(depth.dtype).eps * (jnp.abs(best) + 1.0)
        pixel = jnp.where(depth <= best + tol, pixel, tests.num_pixels)
        return zbuf, idbuf.at[pixel].max(owner, mode="drop")

    def step(i, buffers):
        # Iterations [0, count) fill the z-buffer, [count, 2*count) find owners. One traced
        # body serves both sweeps.
        sweep = i // tests.count
        pixel, depth, owner = tests.chunk(i - sweep * tests.count)
        return jax.lax.cond(sweep == 0, min_depth, owner_id, buffers, pixel, depth, owner)

    buffers = (jnp.full((tests.num_pixels,), jnp.inf, verts.dtype),
               jnp.full((tests.num_pixels,), -1, jnp.int32))
    return jax.lax.fori_loop(0, 2 * tests.count, step, buffers)[1]


def _coverage(verts, faces, height, width, perspective_correct, near, tile, budget):
    """[B*H*W] bool: pixels whose centre some triangle covers: `_visibility(...) >= 0` in one
    sweep instead of two (no depth is compared, so no owner needs finding)."""
    tests = _candidates(verts, faces, height, width, perspective_correct, near, tile, budget)

    def step(i, covered):
        pixel, _, _ = tests.chunk(i)
        return covered.at[pixel].set(True, mode="drop")

    return jax.lax.fori_loop(0, tests.count, step, jnp.zeros((tests.num_pixels,), bool))


def default_tile(image_size, num_faces: int) -> int:
    """Tile side for the direct pass: about the bounding-box side of a typical triangle, for a
    mesh of `num_faces` triangles covering about half of the (H, W) image (a face in its crop):
    sqrt(H W / F) pixels, rounded, within 1..4. BFM's 70k triangles get 1 px tiles at 224-256
    (their median bounding box there is 0.75 px wide: larger tiles test empty pixel centres),
    2 at 512, 4 at 1024 (benchmarks/BENCHMARKS.md, "Rasterizer")."""
    side = (int(image_size[0]) * int(image_size[1]) / max(int(num_faces), 1)) ** 0.5
    return int(min(4, max(1, round(side))))


def _default_budget(height, width):
    """Pixel tests per chunk: large enough to amortise loop overhead, small enough for cache."""
    return int(min(1 << 18, max(1 << 13, (height * width) // 2)))


def rasterize(vertices, faces, image_size, *, perspective_correct: bool = False,
              near: float = 1e-6, tile: int | None = None,
              chunk_budget: int | None = None) -> Fragments:
    """Rasterizes a batch of triangle meshes that share one face list.

    Args:
      vertices: [B, V, 3] (or [V, 3]) float, pixel coordinates x, y and depth z (smaller is
        nearer); with `perspective_correct` z must be the positive view-space depth.
      faces: [F, 3] int32 vertex ids.
      image_size: (H, W) in pixels, static.
      perspective_correct: interpolate with perspective-correct barycentrics (b_i / z_i
        normalised) and return view depth; otherwise screen-space (affine) barycentrics.
      near: with `perspective_correct`, triangles with a vertex at depth <= near are dropped.
      tile: side in pixels of the bounding-box tiles the visibility pass tests (static; None =
        `default_tile(image_size, F)`); best near the typical triangle's size in pixels.
      chunk_budget: pixel tests per chunk of the visibility pass (static; None = automatic).

    Returns:
      Fragments with triangle_id [B,H,W], depth [B,H,W], barycentric [B,H,W,3]. Gradients flow
      from depth and barycentric to `vertices`; triangle_id carries none.
    """
    height, width = int(image_size[0]), int(image_size[1])
    vertices = jnp.asarray(vertices)
    if not jnp.issubdtype(vertices.dtype, jnp.floating):
        vertices = vertices.astype(jnp.float32)
    unbatched = vertices.ndim == 2
    if unbatched:
        vertices = vertices[None]
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"rasterize: vertices must be [B,V,3], got {vertices.shape}")
    faces = jnp.asarray(faces, jnp.int32)
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"rasterize: faces must be [F,3], got {faces.shape}")
    tile = int(tile or default_tile((height, width), jnp.shape(faces)[0]))
    budget = int(chunk_budget or _default_budget(height, width))
    frags = _rasterize_batch(vertices, faces, height, width, bool(perspective_correct),
                             float(near), tile, budget)
    if unbatched:
        frags = Fragments(*(x[0] for x in frags))
    return frags


@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def _rasterize_batch(vertices, faces, height, width, perspective_correct, near, tile, budget):
    """jit-compiled body of `rasterize` (cached per shape for eager callers)."""
    owner = _visible_batch(jax.lax.stop_gradient(vertices), faces, height, width,
                           perspective_correct, near, tile, budget)
    return _fragments_from_owner(vertices, faces, owner, perspective_correct)


def _per_image(pass_fn, still, faces, height, width, perspective_correct, near, tile, budget):
    """`pass_fn` (`_visibility` or `_coverage`) over a [B, V, 3] batch -> its [B, H, W] result."""
    batch = still.shape[0]
    if batch > 1 and target_platform() == "cpu":
        # On CPU nothing is shared between images, and one pass over all B*F triangles only
        # makes the working set B times larger than the cache (1.4-1.8x slower per image at
        # batch 8, benchmarks/BENCHMARKS.md); a sequential map keeps batch-1 speed.
        out = jax.lax.map(lambda v: pass_fn(v[None], faces, height, width, perspective_correct,
                                            near, tile, budget), still)
    else:
        out = pass_fn(still, faces, height, width, perspective_correct, near, tile, budget)
    return out.reshape(batch, height, width)


def _visible_batch(still, faces, height, width, perspective_correct, near, tile, budget):
    """[B, H, W] int32 visible triangle per pixel (-1 = background); no gradient."""
    num_faces = faces.shape[0]
    owner = _per_image(_visibility, still, faces, height, width, perspective_correct, near,
                       tile, budget)
    return jnp.where(owner >= 0, owner % max(num_faces, 1), -1).astype(jnp.int32)


@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))
def _covered_batch(still, faces, height, width, perspective_correct, near, tile, budget):
    return _per_image(_coverage, still, faces, height, width, perspective_correct, near,
                      tile, budget)


def covered_pixels(vertices, faces, image_size, *, perspective_correct: bool = False,
                   near: float = 1e-6, tile: int | None = None,
                   chunk_budget: int | None = None):
    """[B, H, W] bool: where `rasterize(...)` with the same arguments has a triangle
    (`Fragments.mask`), at a third of its cost: one sweep, no depth, no barycentrics. For masks
    of a triangle subset (the mouth region) drawn on their own. No gradient."""
    height, width = int(image_size[0]), int(image_size[1])
    tile = int(tile or default_tile((height, width), jnp.shape(faces)[0]))
    budget = int(chunk_budget or _default_budget(height, width))
    return _covered_batch(jax.lax.stop_gradient(jnp.asarray(vertices, jnp.float32)),
                          jnp.asarray(faces, jnp.int32), height, width,
                          bool(perspective_correct), float(near), tile, budget)


def visible_triangles(vertices, faces, image_size, *, perspective_correct: bool = False,
                      near: float = 1e-6, tile: int | None = None,
                      chunk_budget: int | None = None):
    """The visibility pass of `rasterize` alone: [B, H, W] int32 triangle ids, -1 background.

    With `fragments_for` it lets an optimiser that moves the mesh by sub-pixel amounts keep one
    visibility result for several steps (the differentiable pass is the cheaper half)."""
    height, width = int(image_size[0]), int(image_size[1])
    tile = int(tile or default_tile((height, width), jnp.shape(faces)[0]))
    budget = int(chunk_budget or _default_budget(height, width))
    return _visible_jit(jax.lax.stop_gradient(jnp.asarray(vertices, jnp.float32)),
                        jnp.asarray(faces, jnp.int32), height, width, bool(perspective_correct),
                        float(near), tile, budget)


_visible_jit = partial(jax.jit, static_argnums=(2, 3, 4, 5, 6, 7))(_visible_batch)


def fragments_for(vertices, faces, triangle_id, *, perspective_correct: bool = False) -> Fragments:
    """The differentiable pass of `rasterize` for a given visibility: vertices [B, V, 3],
    faces [F, 3], triangle_id [B, H, W] (from `visible_triangles`) -> Fragments whose depth and
    barycentrics are differentiable in `vertices` (barycentrics may leave [0, 1] where the mesh
    has moved since the visibility was computed; they extrapolate the winner's plane)."""
    return _fragments_from_owner(jnp.asarray(vertices), jnp.asarray(faces, jnp.int32),
                                 jnp.asarray(triangle_id, jnp.int32), bool(perspective_correct))


def _fragments_from_owner(vertices, faces, owner, perspective_correct):
    batch, height, width = owner.shape
    covered = owner >= 0
    local = jnp.where(covered, owner, 0)

    # Differentiable pass: the winner's plane equations, computed from the traced vertices per
    # triangle (cheap, [B, F]) and gathered per pixel; their backward is a scatter-add over F.
    corners = vertices[:, faces]                                     # [B, F, 3, 3]
    planes = triangle_planes(corners, perspective_correct)           # [B, F, 10]
    if perspective_correct:
        planes = jnp.concatenate([planes, 1.0 / corners[..., 2]], -1)  # + 1/z_i for weights
    pixel_planes = jnp.take_along_axis(planes, local.reshape(batch, -1, 1), axis=1)
    pixel_planes = pixel_planes.reshape(batch, height, width, -1)
    py, px = jnp.meshgrid(jnp.arange(height, dtype=vertices.dtype) + 0.5,
                          jnp.arange(width, dtype=vertices.dtype) + 0.5, indexing="ij")
    bary, depth, _ = _evaluate_planes(pixel_planes, px, py, perspective_correct)
    if perspective_correct:
        weighted = bary * pixel_planes[..., 10:13]
        bary = weighted / jnp.where(covered, jnp.sum(weighted, -1), 1.0)[..., None]
    return Fragments(
        triangle_id=jnp.where(covered, local, -1).astype(jnp.int32),
        depth=jnp.where(covered, depth, 0.0),
        barycentric=jnp.where(covered[..., None], bary, 0.0),
    )


def interpolate(attributes, faces, fragments: Fragments):
    """Interpolates per-vertex attributes at every pixel.

    Args:
      attributes: [B, V, C] or [V, C] (shared by the batch) float.
      faces: [F, 3] int32.
      fragments: from `rasterize` (batched).
    Returns:
      [B, H, W, C]; 0 on background. Differentiable in attributes and barycentrics.
    """
    faces = jnp.asarray(faces, jnp.int32)
    tid = fragments.triangle_id
    safe = jnp.where(tid >= 0, tid, 0)
    corner_ids = faces[safe]                                          # [B, H, W, 3]
    if attributes.ndim == 2:
        values = attributes[corner_ids]                               # [B, H, W, 3, C]
    else:
        b_idx = jnp.arange(attributes.shape[0])[:, None, None, None]
        values = attributes[b_idx, corner_ids]
    out = jnp.sum(values * fragments.barycentric[..., None], axis=-2)
    return jnp.where((tid >= 0)[..., None], out, 0.0)


def coverage_alpha(fragments: Fragments):
    """tf_mesh_renderer's alpha: clamp(2 * sum(barycentrics), 0, 1) -> [B, H, W]."""
    return jnp.clip(2.0 * jnp.sum(fragments.barycentric, axis=-1), 0.0, 1.0)


__all__ = ["Fragments", "rasterize", "visible_triangles", "covered_pixels", "fragments_for",
           "interpolate", "coverage_alpha", "triangle_planes", "default_tile"]
