"""emohd-jax: emotion from the face, voice and words of a person talking, fused late (EmoHD, in JAX/Flax).

    run = emohd_jax.predict(["clip.mp4", "photos/"], out_dir="out")  # the shipped offline bundle
    run.results     # one "emohd.predict/1" dict per predicted input (schema: emohd_jax.serve.outputs)
    run.failures    # (input, why it could not be predicted) pairs; run.exit_code as `emohd predict` exits
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
