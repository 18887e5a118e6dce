"""TFDS builders (ArrayRecord) for target-video and pseudo-video shards, and grain loaders.

Empty until subject preparation lands (issue "Subject preparation"): nothing here is used yet.
"""
