"""NeMo recogniser for the paper's QuartzNet15x5NR-En or any CTC `.nemo` file the user has (extra `[nemo]`).

NeMo is heavy (it pulls torch, lightning, hydra), so it is imported only when this backend is built.
QuartzNet emits lowercase words without punctuation: its `sentence` is those words, unpunctuated.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Sequence

import numpy as np

from emohd_jax.asr.transcriber import SAMPLE_RATE, BackendUnavailableError, Transcript
from emohd_jax.audio.io import SILENCE_THRESHOLD_DBFS, peak_dbfs

_INSTALL_HINT = "pip install 'emohd-jax[nemo]' (or: pip install 'nemo_toolkit[asr]')"


def _import_nemo_asr():
    """nemo.collections.asr, or BackendUnavailableError with the install command."""
    try:
        import nemo.collections.asr as nemo_asr
    except ImportError as err:
        raise BackendUnavailableError(
            f"the NeMo ASR backend needs NeMo, which is not installed ({err}); {_INSTALL_HINT}") from err
    return nemo_asr


class NemoTranscriber:
    """Wraps `EncDecCTCModel.restore_from(model)`; clips are written to temporary 16 kHz wavs for NeMo's loader."""

    def __init__(self, model: str | os.PathLike, *, batch_size: int = 8):
        nemo_asr = _import_nemo_asr()
        path = pathlib.Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such .nemo file (e.g. QuartzNet15x5NR-En.nemo)")
        self._model = nemo_asr.models.EncDecCTCModel.restore_from(str(path), map_location="cpu")
        self._model.eval()
        self.batch_size = batch_size

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Transcript]:
        """waves: each [samples] float32 mono 16 kHz → one Transcript each; silent or empty waves give no words."""
        import soundfile

        texts = [""] * len(waves)
        voiced = [i for i, w in enumerate(waves) if w.size and peak_dbfs(w) >= SILENCE_THRESHOLD_DBFS]
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i in voiced:
                files.append(os.path.join(tmp, f"{i}.wav"))
                soundfile.write(files[-1], waves[i], SAMPLE_RATE)
            if files:
                hypotheses = self._model.transcribe(files, batch_size=self.batch_size)
                for i, hypothesis in zip(voiced, hypotheses, strict=True):
                    # NeMo ≥ 1.20 returns Hypothesis objects, older releases plain strings.
                    texts[i] = getattr(hypothesis, "text", hypothesis)
        return [Transcript.from_text(text, wave.size / SAMPLE_RATE) for text, wave in zip(texts, waves)]
