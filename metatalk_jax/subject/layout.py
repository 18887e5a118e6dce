"""The subject directory: what `prepare` writes and later stages read.

    SUBJECT_DIR/
      subject.json        format + version, source video, frame count/rate/size, crop and fit
                          resolutions, model, config, package versions, input fingerprint
      coefficients.npz    expression [T,E], gamma [T,27], angles [T,3] (rad), translation [T,3];
                          identity [I], texture [K], albedo [V,3] (shared by all frames)
      crops.npz           centers [T,2], sizes [T] (frame px, continuous coordinates), matrices
                          [T,2,3] frame-to-crop maps at the renderer resolution, frame_size [2],
                          camera [5] = focal_x, focal_y, cx, cy, distance of the video's 3D
                          camera (frame pixels) that the coefficients were fitted with
      landmarks.npz       tracked landmarks [T,68,2], boxes [T,4], detected [T], gaps, status
                          [T], source_frames [T] (the video frame of each subject frame), cuts
      audio.wav           16 kHz mono 16-bit (absent when the video has none)
      frames.mp4          only when frames were excluded (another person, or the target absent):
                          the kept frames at subject.json's fps; subject.json's source.path
                          then names it (source.original_path the video)
      report.json         tracking (target, kept/excluded frames with ranges, shot cuts, the
                          decision per shot) and fit summaries, per-frame errors, every video
                          frame's status
      tracking/faces.npz  every face track of the video with its descriptors and thumbnails
                          (tracking/face_tracks.FaceTable); faces.json its key
      previews/overlay.mp4, previews/errors.png, previews/identity.png (one row per shot)
      tfds/               the TFDS target-video dataset (ArrayRecord shards)

Frame t of every array is frame t of source.path resampled to subject.json's fps: the video
itself, or frames.mp4 when frames were excluded (landmarks.npz's source_frames maps back).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from metatalk_jax.errors import InputError

FORMAT = "metatalk_jax.subject"
FORMAT_VERSION = 1

SUBJECT_JSON = "subject.json"
COEFFICIENTS = "coefficients.npz"
CROPS = "crops.npz"
LANDMARKS = "landmarks.npz"
AUDIO = "audio.wav"
FRAMES_VIDEO = "frames.mp4"
REPORT = "report.json"
PREVIEWS = "previews"
TFDS_DIR = "tfds"
TRACKING_DIR = "tracking"      # the face tracks, reused by prepare --keep-shots/--drop-shots
FACES_NPZ = "faces.npz"        # inside TRACKING_DIR (or `<out>.tracking/` after a failed run)
FACES_JSON = "faces.json"
IDENTITY_SHEET = "identity.png"     # inside PREVIEWS
# Only in a talker bundle's subject (inference/talker_bundle.py): the training frames' face
# crops, the mouth-reference bank, in place of the TFDS shards.
REFERENCES_NPZ = "references.npz"


@dataclasses.dataclass
class Subject:
    """A prepared subject read back from its directory (numpy arrays)."""

    path: str
    meta: dict
    coefficients: dict
    crops: dict
    landmarks: dict

    @property
    def num_frames(self) -> int:
        return int(self.meta["num_frames"])

    @property
    def audio_path(self) -> str | None:
        path = os.path.join(self.path, AUDIO)
        return path if os.path.exists(path) else None

    @property
    def tfds_dir(self) -> str:
        return os.path.join(self.path, TFDS_DIR)

    def crop_boxes(self):
        """The final crop boxes (crops.npz centres and sides, frame px) as a CropBoxes."""
        from metatalk_jax.tracking.crop import CropBoxes
        crops = self.crops
        return CropBoxes(np.asarray(crops["centers"], np.float32),
                         np.asarray(crops["sizes"], np.float32),
                         tuple(int(v) for v in crops["frame_size"]))


def read_subject_meta(path: str) -> dict:
    """subject.json of a subject directory; a missing, unreadable or foreign/newer one is an
    InputError naming it."""
    meta_path = os.path.join(path, SUBJECT_JSON)
    if not os.path.isfile(meta_path):
        raise InputError(f"{path}: not a subject directory (no {SUBJECT_JSON})")
    with open(meta_path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{meta_path}: not a metatalk_jax subject (format {meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise InputError(f"{meta_path}: subject format v{meta['format_version']} is newer than "
                         f"this metatalk_jax reads (v{FORMAT_VERSION})")
    return meta


def load_subject(path: str) -> Subject:
    """Reads a subject directory; a missing, incomplete or foreign/newer one is an InputError
    naming it."""
    meta = read_subject_meta(path)

    def arrays(name):
        if not os.path.isfile(os.path.join(path, name)):
            raise InputError(f"{os.path.join(path, name)}: missing (an incomplete subject "
                             "directory)")
        with np.load(os.path.join(path, name)) as data:
            return {k: data[k] for k in data.files}

    return Subject(path, meta, arrays(COEFFICIENTS), arrays(CROPS), arrays(LANDMARKS))


def load_training_subject(path: str) -> Subject:
    """`load_subject` for a training config's data.subject, which may be unset."""
    if not path:
        raise InputError("no subject: pass --config.data.subject=SUBJECT_DIR "
                         "(a directory written by `python -m metatalk_jax.prepare`)")
    return load_subject(path)
