"""metatalk_jax: JAX/Flax implementation of Meta Talk (ICASSP 2022).

Audio-driven, lip-synchronised, high-definition talking faces from ~3 minutes of target video.
Every stage is a module runnable as `python -m metatalk_jax.<stage>`; see README.md.
"""

__version__ = "0.1.0"
