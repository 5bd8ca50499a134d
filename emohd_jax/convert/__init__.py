"""Converters from published checkpoints (Hugging Face, Keras, PyTorch) into our Flax NNX parameter layouts."""
