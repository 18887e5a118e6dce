"""Media at the edges of the pipeline, through the ffmpeg of the imageio-ffmpeg wheel.

video_read.py streams frames (any container/codec, optional fps conversion); audio_files.py
decodes and resamples audio to 16 kHz mono; video_write.py writes H.264 mp4 (optionally with
AAC audio) and PNG atomically; ffmpeg_tools.py runs ffmpeg and turns failures into one-line
MediaErrors; audio_features.py computes the audio features (Wav2Lip's mel spectrogram,
SyncNet's MFCC) and their per-video-frame windows at any frame rate; frame_audio_windows.py cuts
one frame's audio window and its mel columns, the same in training and inference.
"""
