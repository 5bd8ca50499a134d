"""Search spaces for `emohd sweep --sweep NAME`: each `sweeps/<name>.py` defines `get_sweep()` → `emohd_jax.study.space.Sweep`."""
