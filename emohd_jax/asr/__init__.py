"""Speech recognition for the text tower: one batch interface, Whisper (offline default) and NeMo backends."""

from emohd_jax.asr.backends import make_transcriber
from emohd_jax.asr.transcriber import BackendUnavailableError, Transcriber, Transcript

__all__ = ["BackendUnavailableError", "Transcriber", "Transcript", "make_transcriber"]
