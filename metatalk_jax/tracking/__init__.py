"""Face tracking of a video: per-frame detection and iBUG-68 landmarks, gap filling, smoothing.

backends.py holds the pluggable detector/landmarker (dlib by default); track.py runs one over a
stream of frames and returns a FaceTrack ([T,68,2] float32 landmarks in pixels, continuous
coordinates: pixel (i, j) is centred at (j + 0.5, i + 0.5)); crop.py is the crop module.
"""
