"""The 3DMM renders of every frame of a subject, made once per training resolution.

The renderer's input for frame i is the renders of frames i-3..i+3, so each render is used by 7
examples in every epoch; making them once (as AudioDVP does, in its `render/` folder) instead of
inside every step saves 7 x epochs renders per frame. The cache is a plain `.npy` of uint8
[T, R, R, 3] (frame t in its own crop at R x R, background 0) under this host's cache dir
(<metatalk cache>/render_cache/<hostname>/: each host of a multi-host run renders its own copy on
its own devices, so no host waits for, or reads the disk of, another), keyed by the bytes of the
subject's coefficients and crops, the model, R, the conditioning and the source of the rendering
code (`code_version`); it is read memory-mapped, so only the touched frames are in memory (a
3-minute video is 0.9 GB at 256 and 14 GB at 1024 on disk).

The mouth-reference cache (`ensure_reference_cache`, renderers with data.mouth_reference) is a
second array of the same shape beside it: each frame's training reference (the nearest other
mouth, subject/mouth_references.py) redrawn in that frame's render geometry, plus the chosen
reference frames [T] in `<cache>_frames.npy`.
"""

from __future__ import annotations

import hashlib
import os
import socket

import jax
import numpy as np

from metatalk_jax.atomic_files import atomic_path
from metatalk_jax.face3d.morphable import MorphableModel
from metatalk_jax.fixed_batches import index_batches
from metatalk_jax.progress import Progress
from metatalk_jax.subject.conditioning import (ReferenceFrames, cavity_colour, crop_renders,
                                               window_renders)
from metatalk_jax.subject.face_model import subject_camera
from metatalk_jax.subject.layout import Subject

CACHE_VERSION = 2


def frame_screen_transforms(subject: Subject, resolution: int) -> np.ndarray:
    """[T, 2, 3] frame-to-crop maps (continuous coordinates) of every frame at `resolution`."""
    return subject.crop_boxes().screen_transform(resolution)


def cache_path(subject: Subject, model: MorphableModel, resolution: int,
               cache_dir: str | None = None, conditioning: str = "audiodvp",
               reference_gap: int | None = None) -> str:
    from metatalk_jax.checksums import file_sha256
    from metatalk_jax.runtime import default_cache_dir
    from metatalk_jax.subject import layout
    # The files' own bytes, not subject.json's fingerprint: a re-fit with other code keeps the
    # fingerprint of its inputs but changes the coefficients.
    contents = [file_sha256(os.path.join(subject.path, name))
                for name in (layout.COEFFICIENTS, layout.CROPS)]
    key = hashlib.sha256(repr((CACHE_VERSION, code_version(), contents,
                               subject.meta.get("model", {}).get("sha256"), model.name,
                               int(resolution), conditioning, reference_gap)
                               ).encode()).hexdigest()[:24]
    # Per host: each host renders with its own devices into its own disk; the host name keeps
    # hosts apart when METATALK_CACHE is on a file system several hosts share.
    root = cache_dir or os.path.join(default_cache_dir(), "render_cache", socket.gethostname())
    kind = "" if reference_gap is None else "_reference"
    return os.path.join(root, f"{key}_{int(resolution)}{kind}.npy")


# The modules whose code decides a render's pixels (relative to the package root).
RENDER_CODE = ("face3d/antialias.py", "face3d/geometry.py", "face3d/mouth_interior.py",
               "face3d/raster.py", "face3d/render.py", "face3d/shading.py",
               "face3d/texture_transfer.py", "subject/conditioning.py",
               "subject/face_model.py", "subject/mouth_references.py",
               "subject/render_cache.py")


def code_version(files=RENDER_CODE) -> str:
    """sha256 (16 hex) of the source of the modules that make the renders: a cache built by
    other rendering code is never reused (CACHE_VERSION alone relies on someone bumping it)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha256()
    for name in files:
        path = os.path.join(package, name)
        digest.update(name.encode() + b"\0")
        if os.path.exists(path):
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def render_frames(model: MorphableModel, subject: Subject, resolution: int, index: np.ndarray,
                  render_fn=None, conditioning: str = "audiodvp") -> np.ndarray:
    """uint8 [len(index), R, R, 3] renders of frames `index` (rounded from [0, 1])."""
    c = subject.coefficients
    st = frame_screen_transforms(subject, resolution)
    args = [c["expression"][index], c["gamma"][index], c["angles"][index],
            c["translation"][index], st[index]]
    fn = render_fn or make_render_fn(subject, resolution, conditioning)
    device = jax.local_devices()[0]
    images = np.asarray(fn(model, *(jax.device_put(np.asarray(a[:, None], np.float32), device)
                                    for a in args)))
    return np.round(images[:, 0] * 255.0).astype(np.uint8)


def make_render_fn(subject: Subject, resolution: int, conditioning: str = "audiodvp"):
    camera = subject_camera(subject, resolution)
    colour = cavity_colour(conditioning)
    return jax.jit(lambda model, *coeffs: window_renders(model, camera, *coeffs,
                                                         mouth_cavity=colour))


def ensure_render_cache(subject: Subject, model: MorphableModel, resolution: int, *,
                        conditioning: str = "audiodvp", batch: int = 16,
                        cache_dir: str | None = None, show_progress: bool = True) -> str:
    """Path of the render cache of `subject` at `resolution`, building it when missing.

    model: the subject's face model (subject.face_model.subject_face_model); conditioning:
    "audiodvp" (plain renders) or "mouth_cavity" (subject.conditioning). Written to a
    temporary name and renamed, so concurrent builders (several local processes) and killed
    builds never leave a partial file under the final name.
    """
    path = cache_path(subject, model, resolution, cache_dir, conditioning)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = subject.num_frames
    # This process's own device: jax.devices()[0] is process 0's, which other hosts cannot use.
    model = jax.device_put(model.as_jax(), jax.local_devices()[0])
    fn = make_render_fn(subject, resolution, conditioning)
    progress = Progress(f"render cache {resolution}px", t, enabled=show_progress)
    with atomic_path(path, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(t, resolution, resolution, 3))
        for index, padded in index_batches(t, batch):
            out[index] = render_frames(model, subject, resolution, padded, fn)[:len(index)]
            progress.update(len(index))
        out.flush()
        del out
    progress.close()
    return path


def ensure_reference_cache(subject: Subject, model: MorphableModel, resolution: int, *,
                           gap: int, batch: int = 16, cache_dir: str | None = None,
                           show_progress: bool = True) -> str:
    """Path of the mouth-reference cache of `subject` at `resolution` (module docstring),
    building it when missing: uint8 [T, R, R, 3], frame t's reference (the nearest training
    mouth more than `gap` frames away) redrawn in frame t's geometry (off the mesh: that crop at
    the same place)."""
    from metatalk_jax.data_pipelines.subject_frames import open_target_source
    from metatalk_jax.subject.mouth_references import (ReferenceCrops, mouth_shapes,
                                                       training_references)
    path = cache_path(subject, model, resolution, cache_dir, reference_gap=int(gap))
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    c, t = subject.coefficients, subject.num_frames
    train_frames = len(open_target_source(subject.tfds_dir, "train"))
    chosen = training_references(mouth_shapes(model, c["expression"]), train_frames, int(gap))
    crops = ReferenceCrops(subject.tfds_dir)
    stored = crops[0].shape[0]
    here, there = (frame_screen_transforms(subject, r) for r in (resolution, stored))
    camera = subject_camera(subject, resolution)
    draw = jax.jit(lambda model, e, g, a, tr, st, *ref: crop_renders(
        model, camera, e, g, a, tr, st, reference=ReferenceFrames(*ref)).reference)
    model = jax.device_put(model.as_jax(), jax.local_devices()[0])
    progress = Progress(f"mouth references {resolution}px", t, enabled=show_progress)
    with atomic_path(path, ".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(t, resolution, resolution, 3))
        for index, padded in index_batches(t, batch):
            ref = chosen[padded]
            args = [c["expression"][padded], c["gamma"][padded], c["angles"][padded],
                    c["translation"][padded], here[padded], c["expression"][ref],
                    c["angles"][ref], c["translation"][ref], there[ref]]
            images = draw(model, *(np.asarray(a, np.float32) for a in args), crops.take(ref))
            out[index] = np.round(np.asarray(images)[:len(index)] * 255.0).astype(np.uint8)
            progress.update(len(index))
        out.flush()
        del out
        np.save(reference_frames_path(path), chosen)    # before the cache appears
    progress.close()
    return path


def reference_frames_path(reference_cache: str) -> str:
    """The [T] int64 reference frame of each frame, beside a mouth-reference cache."""
    return reference_cache[:-len(".npy")] + "_frames.npy"
