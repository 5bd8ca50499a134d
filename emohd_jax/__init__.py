"""emohd-jax: multimodal (face, voice, words) emotion recognition with weighted late fusion, in JAX."""

__version__ = "0.1.0"
