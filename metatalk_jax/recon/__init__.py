"""3DMM reconstruction of a tracked video: losses, batched fitting, per-frame report."""
