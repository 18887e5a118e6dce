"""Config of subject preparation (`python -m metatalk_jax.prepare`): target video -> subject dir.

Launch:  python -m metatalk_jax.prepare --video talk.mp4 --out subjects/me               (default)
         python -m metatalk_jax.prepare --video talk.mp4 --out s --config configs/prepare.py:tiny
         python -m metatalk_jax.prepare ... --model bfm_audiodvp.npz     (your BFM2009 model)
Override any key:  --config.renderer_resolution=1024  --config.audio_required=False
"""

import ml_collections

from metatalk_jax.errors import InputError


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.fps = 25.0                      # frames are resampled to this rate
    config.sample_rate = 16000             # audio, Hz
    config.audio_required = True           # a video without an audio track is an error
    config.audio_window_s = 0.64           # audio stored with each frame, centred on it
    # Tracking.
    config.backend = "dlib"
    config.upsample = 1                    # dlib HOG upsampling (small faces need >= 1)
    config.max_gap = 12                    # frames without a face that may be filled in
    config.min_tracked_fraction = 0.8      # of the kept frames, with a detected face
    config.landmark_sigma = 0.5            # temporal smoothing, frames (lips move fast)
    # One person through cuts and crowds (tracking/face_tracks.py, identity_decision.py).
    config.target_face = ""                # "X,Y" video pixels: the target is the face there
    config.target_frame = 0                # ... in this frame (at `fps`); "" above = the
                                           # largest, most central face of the first frame
    config.identity_overhead = 0.1         # descriptor time / detection time (sets how often
                                           # faces are described: face_tracks.descriptor_budget)
    config.max_faces = 6                   # the largest this many faces of a frame are followed
    config.keep_shots = ""                 # "3,7": shots of previews/identity.png to keep ...
    config.drop_shots = ""                 # ... or to leave out (prepare --keep/--drop-shots)
    config.min_kept_fraction = 0.5         # of the video's frames that must show the target
    config.min_kept_frames = 50            # ... and at least this many (2 s at 25 fps)
    config.first_face_s = 5.0              # no face in the first seconds: an error at once
    # The crop module.
    config.renderer_resolution = 512       # 256 / 512 / 1024: the renderer's face crop side
    config.fit_resolution = 256            # crop side used for fitting the 3DMM
    config.landmark_margin = 1.6           # first boxes: margin x landmark extent
    config.landmark_shift = 0.1            # ... moved up by this fraction of the side
    config.face_margin = 1.15              # final boxes: margin x projected 3DMM face extent
    config.face_shift = 0.0
    config.size_sigma = 6.0                # box smoothing along time, frames
    config.center_sigma = 1.5
    config.mouth_dilation = 4              # 3x3 dilations of the mouth mask (AudioDVP: 4 at 256)
    config.image_format = "png"            # face crops in the TFDS shards: png or jpeg
    config.validation_fraction = 0.1       # the last part of the video is held out
    # Reconstruction (see metatalk_jax/recon/fit.py).
    config.fit = ml_collections.ConfigDict()
    config.fit.landmark_steps = 400
    config.fit.key_frames = 24            # at most; one per key_frame_spacing frames, >= 4
    config.fit.key_frame_spacing = 25
    config.fit.shared_steps = 100
    config.fit.chunk_size = 8
    config.fit.frame_steps = 8
    config.fit.warm_lr_scale = 0.5        # step size of chunks after the first (warm-started)
    config.fit.visibility_refresh = 4     # stage C recomputes visibility every this many steps
    config.fit.lr = ml_collections.ConfigDict(dict(
        identity=0.05, expression=0.05, angles=0.01, translation=0.02, gamma=0.02,
        texture=0.05, albedo_offset=0.01))
    config.fit.weights = ml_collections.ConfigDict(dict(
        photometric=1.9, landmark=1.6e-3, regularization=3e-4, identity=1.0, texture=1.7e-3,
        expression=0.8, albedo=1e-2,
        # AudioDVP weighs the nose and jaw 1 against 50; the nose is rigid and well tracked,
        # so it gets more say here (it pins the face's position; see the closing note).
        landmark_inner=50.0, landmark_nose=20.0, landmark_jaw=2.0))
    config.batch = 8                       # frames per render call for masks and previews
    config.preview_frames = 250            # at most this many frames in the overlay video
    if arg in ("tiny", "cpu"):
        # CPU tests: small crops and few steps; the carphone clip (176x144) takes ~1 minute.
        config.renderer_resolution = 128
        config.fit_resolution = 96
        config.fit.landmark_steps = 300
        config.fit.key_frames = 6
        config.fit.shared_steps = 40
        config.fit.frame_steps = 6
        if arg == "cpu":
            # Your own clip on a laptop: crops for the cpu renderer (64 or 128 px), more key
            # frames for the identity and albedo of a longer clip.
            config.fit.key_frames = 12
    elif arg not in (None, ""):
        raise InputError(f"configs/prepare.py: unknown variant {arg!r} (known: tiny, cpu)")
    return config
