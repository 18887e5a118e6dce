"""Flax linen models (pure init/apply): the neural face renderer and the networks it trains with."""
