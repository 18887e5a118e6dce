"""The training engine: device mesh, sharded train state, jit-compiled steps, orbax checkpoints with
preemption resume, metric writers; one task module per model."""
