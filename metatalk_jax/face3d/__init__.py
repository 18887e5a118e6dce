"""The 3D face: morphable model, geometry, SH shading, rasterizer and renderer (pure jax.numpy)."""
