"""A talker bundle: exactly what inference needs, in one directory with a manifest.

    python -m metatalk_jax.export --subject subjects/me --a2e runs/me_a2e \\
        --renderer runs/me_hd --out me.talker          # or gs://bucket/talkers/me.talker
    python -m metatalk_jax.infer --talker me.talker --audio speech.wav --out out.mp4

    me.talker/
      manifest.json       format, version, the subject's fingerprint, every file's sha256 and size
      subject/            subject.json, coefficients.npz, crops.npz, landmarks.npz, the
                          background frames' video (the subject's source, byte for byte) and,
                          for renderers that read mouth references, references.npz (the training
                          frames' face crops)
      a2e/, renderer/     config.json, trained_on.json and a checkpoint of the inference weights
                          only (A2E params; the generator's params and BatchNorm statistics:
                          no discriminator, no optimiser state), read by the same loaders as a
                          training work dir
      face_model.npz      the morphable model the subject was prepared with

`open_bundle` checks the manifest before anything is used: a missing, truncated, altered or
extra file, or another format, is refused with one line. A bundle at a bucket URL is staged
into this host's cache first (train/staging.py) and checked there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

from metatalk_jax.atomic_files import publishing_dir, write_json, write_npz
from metatalk_jax.checksums import file_sha256
from metatalk_jax.errors import InputError
from metatalk_jax.subject import layout
from metatalk_jax.train import workdir as workdir_lib

FORMAT = "metatalk_jax.talker"
VERSION = 1
MANIFEST = "manifest.json"
SUBJECT_FILES = (layout.SUBJECT_JSON, layout.COEFFICIENTS, layout.CROPS, layout.LANDMARKS)
REFERENCES_NPZ = layout.REFERENCES_NPZ
FACE_MODEL = "face_model.npz"
TRAINED_ON = "trained_on.json"


class BundleError(InputError):
    """A talker bundle that cannot be used (one line: the bundle and the problem)."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A checked bundle on local disk: its paths, as Talker.load takes them."""

    path: str
    subject: str
    a2e: str
    renderer: str
    video: str
    face_model: str
    manifest: dict


def _save_checkpoint(workdir: str, config_json: bytes, trained_on: str | None, step: int,
                     state: dict) -> None:
    import orbax.checkpoint as ocp
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "wb") as f:
        f.write(config_json)
    if trained_on is not None:
        shutil.copyfile(trained_on, os.path.join(workdir, TRAINED_ON))
    manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                    item_names=("state",))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    manager.close()


def _export_model(path: str, task: str, parts: tuple[str, ...], out: str) -> int:
    """Copies the inference parts of the checkpoint at `path` into the work dir `out`;
    returns its step."""
    from metatalk_jax.inference.trained_models import locate_checkpoint, read_parts
    found = locate_checkpoint(path, task)
    workdir = os.fspath(workdir_lib.epath_of(found.step_dir).parent.parent)
    config_json = workdir_lib.read_bytes(workdir_lib.join(workdir, "config.json"))
    record = workdir_lib.join(workdir, TRAINED_ON)
    local_record = None
    if workdir_lib.exists(record):
        local_record = os.path.join(os.path.dirname(out), f".{task}.{TRAINED_ON}")
        with open(local_record, "wb") as f:
            f.write(workdir_lib.read_bytes(record))
    _save_checkpoint(out, config_json, local_record, found.step, read_parts(found.step_dir,
                                                                            parts))
    if local_record:
        os.remove(local_record)
    return found.step


def _files(root: str) -> dict:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel != MANIFEST:
                out[rel] = {"sha256": file_sha256(path), "bytes": os.path.getsize(path)}
    return dict(sorted(out.items()))


def export_talker(subject_dir: str, a2e_path: str, renderer_path: str, out: str, *,
                  model_path: str | None = None, video: str | None = None) -> dict:
    """Writes the bundle of a subject and its trained A2E and renderer to `out` (a local
    directory or a bucket URL; built locally under a temporary name, then renamed or
    uploaded). The three are checked against each other as infer checks them. Returns the
    manifest."""
    from metatalk_jax.inference import pipeline
    from metatalk_jax.inference.talker import Talker
    settings = pipeline.InferenceSettings(model_path=model_path, video=video,
                                          show_progress=False)
    talker = Talker.load(subject=subject_dir, a2e=a2e_path, renderer=renderer_path,
                         settings=settings)                 # every cross-check of infer
    remote = workdir_lib.is_url(out)
    if not remote and os.path.exists(out):
        raise BundleError(f"{out}: exists; choose another --out (a bundle is never "
                          "overwritten)")
    if remote:
        from metatalk_jax.train.staging import copy_tree
        with tempfile.TemporaryDirectory(prefix=".talker-") as tmp:
            manifest = _write_bundle(tmp, talker, a2e_path, renderer_path, model_path)
            copy_tree(tmp, out)
    else:
        with publishing_dir(out, replace=False, temp_prefix=".talker-") as tmp:
            manifest = _write_bundle(tmp, talker, a2e_path, renderer_path, model_path)
    return manifest


def _write_bundle(folder: str, talker, a2e_path: str, renderer_path: str,
                  model_path: str | None) -> dict:
    """Writes the bundle of a loaded talker into the empty `folder`; returns its manifest."""
    from metatalk_jax.subject.mouth_references import ReferenceCrops
    subject = talker.subject
    os.makedirs(os.path.join(folder, "subject"))
    for name in SUBJECT_FILES:
        shutil.copyfile(os.path.join(subject.path, name), os.path.join(folder, "subject", name))
    extension = os.path.splitext(talker.video)[1] or ".mp4"
    shutil.copyfile(talker.video, os.path.join(folder, "subject", "video" + extension))
    if talker.renderer.mouth_reference:
        crops = ReferenceCrops(subject.tfds_dir)
        write_npz(os.path.join(folder, "subject", REFERENCES_NPZ),
                  crops=crops.take(range(crops.train_frames)))
    steps = {"a2e": _export_model(a2e_path, "a2e", ("params",), os.path.join(folder, "a2e")),
             "renderer": _export_model(renderer_path, "renderer", ("g_params", "g_stats"),
                                       os.path.join(folder, "renderer"))}
    model_file = model_path or _offline_model_path()
    shutil.copyfile(model_file, os.path.join(folder, FACE_MODEL))
    manifest = {"format": FORMAT, "version": VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "subject_fingerprint": subject.meta.get("fingerprint"),
                "resolution": talker.renderer.resolution, "steps": steps,
                "video": "subject/video" + extension, "files": _files(folder)}
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


def _offline_model_path() -> str:
    """The offline model's file (what load_morphable(None) loads)."""
    from metatalk_jax.face3d import assets
    return assets.ensure_offline_model("audiodvp")


def open_bundle(path: str) -> Bundle:
    """The checked bundle at `path` (local or a bucket URL, then staged into the cache).
    Raises BundleError (one line) for anything that does not match its manifest."""
    from metatalk_jax.train.staging import staged_copy
    where = path
    if workdir_lib.is_url(path):
        if not workdir_lib.exists(workdir_lib.join(path, MANIFEST)):
            raise BundleError(f"{path}: no talker bundle there (no {MANIFEST})")
        path = staged_copy(path)
    manifest_path = os.path.join(path, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise BundleError(f"{where}: not a talker bundle (no {MANIFEST}; make one with "
                          "python -m metatalk_jax.export)")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except ValueError:
        raise BundleError(f"{where}: {MANIFEST} is not valid JSON") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: not a talker bundle (format {manifest.get('format')!r})")
    if int(manifest.get("version", 0)) > VERSION:
        raise BundleError(f"{where}: bundle version {manifest.get('version')} is newer than "
                          f"this metatalk_jax reads ({VERSION}); upgrade metatalk_jax")
    listed = manifest.get("files", {})
    present = _names(path)
    for name in sorted(set(listed) - present):
        raise BundleError(f"{where}: {name} is missing (the bundle is incomplete)")
    for name in sorted(present - set(listed)):
        raise BundleError(f"{where}: {name} is not in the manifest (the bundle was altered)")
    for name, entry in listed.items():
        file = os.path.join(path, *name.split("/"))
        size = os.path.getsize(file)
        if size != int(entry["bytes"]):
            raise BundleError(f"{where}: {name} is {size} bytes, the manifest says "
                              f"{entry['bytes']} (truncated or altered)")
        if file_sha256(file) != entry["sha256"]:
            raise BundleError(f"{where}: {name} does not match its checksum (altered)")
    with open(os.path.join(path, "subject", layout.SUBJECT_JSON)) as f:
        fingerprint = json.load(f).get("fingerprint")
    if fingerprint != manifest.get("subject_fingerprint"):
        raise BundleError(f"{where}: its subject is not the one it was exported with")
    return Bundle(path=path, subject=os.path.join(path, "subject"),
                  a2e=os.path.join(path, "a2e"), renderer=os.path.join(path, "renderer"),
                  video=os.path.join(path, *manifest["video"].split("/")),
                  face_model=os.path.join(path, FACE_MODEL), manifest=manifest)


def _names(root: str) -> set:
    return {os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/")
            for folder, _, names in os.walk(root) for n in names} - {MANIFEST}
