"""Media at the edges of the pipeline: video/image writing (decode, audio and features follow)."""
