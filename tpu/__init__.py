"""Cloud TPU and SLURM cluster lifecycle for emohd runs (see tpu/README.md)."""
