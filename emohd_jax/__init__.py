"""emohd-jax: emotion from the face, voice and words of a person talking, fused late (EmoHD, in JAX/Flax).

    results = emohd_jax.predict(["clip.mp4"])   # the shipped offline bundle; see emohd_jax.inference
"""

__version__ = "0.1.0"

from emohd_jax.xla_cpu import route_kernels as _route_kernels

_route_kernels()  # before any JAX backend starts: the CLI, the library and the tests compile alike


def __getattr__(name: str):
    # Lazy: importing the package must not pull JAX, models and Whisper in.
    if name == "predict":
        from emohd_jax.inference import predict

        return predict
    raise AttributeError(f"module 'emohd_jax' has no attribute {name!r}")
