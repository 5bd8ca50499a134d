"""emohd-jax: emotion from the face, voice and words of a person talking, fused late (EmoHD, in JAX/Flax).

    results = emohd_jax.predict(["clip.mp4"])   # the shipped offline bundle; see emohd_jax.serve
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: importing the package must not pull JAX, models and Whisper in.
    if name == "predict":
        from emohd_jax.serve.batch import predict

        return predict
    if name == "sweep":
        from emohd_jax.study.driver import sweep

        return sweep
    raise AttributeError(f"module 'emohd_jax' has no attribute {name!r}")
