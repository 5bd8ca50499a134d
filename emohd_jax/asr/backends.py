"""The recognisers by name: the one place that knows every backend (they import the interface, not this)."""

from __future__ import annotations

from emohd_jax.asr.transcriber import Transcriber


def make_transcriber(backend: str = "whisper", **options) -> Transcriber:
    """Build a backend by name: 'whisper' (offline default, faster-whisper) or 'nemo' (needs `model=` a .nemo path)."""
    if backend == "whisper":
        from emohd_jax.asr.whisper import WhisperTranscriber

        return WhisperTranscriber(**options)
    if backend == "nemo":
        from emohd_jax.asr.nemo import NemoTranscriber

        return NemoTranscriber(**options)
    raise ValueError(f"unknown ASR backend {backend!r} (known: whisper, nemo)")
