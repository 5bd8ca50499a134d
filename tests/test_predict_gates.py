"""What `emohd_jax.predict` lets through, on real audio: words only when the transcript can be trusted (an Urdu
clip: missing, "language: …"), voice only where there is speech (white noise, a hiss-only stretch: "no speech"),
and no fused label for an utterance with neither speech nor face."""

import json
import pathlib

import numpy as np
import pytest
import soundfile

from emohd_jax.audio.io import SAMPLE_RATE, load_audio
from emohd_jax.serve.batch import predict

pytestmark = pytest.mark.slow

_URDU = "urdu/Angry/SM1_F10_A010.flac"  # Urdu talk-show speech (tests/test_asr_language.py)
_KIDS = "ravdess/Actor_17/03-01-01-01-01-01-17.flac"  # "Kids are talking by the door", neutral


def _utterances(out: pathlib.Path, path: pathlib.Path) -> list[dict]:
    (result,) = [json.loads(p.read_text()) for p in out.glob(f"{path.stem}*.json")]
    return result["utterances"]


def test_urdu_words_are_missing_with_the_language_and_english_words_are_present(data_root, tmp_path):
    urdu, kids = data_root / _URDU, data_root / _KIDS
    predict([urdu, kids], out_dir=tmp_path, modalities="voice,words")
    (heard,) = _utterances(tmp_path, urdu)
    words = heard["modalities"]["text"]
    assert not words["present"] and words["reason"].startswith("language: ") and words["reason"] != "language: en"
    assert heard["modalities"]["audio"]["present"]  # the voice goes on without the words
    (english,) = _utterances(tmp_path, kids)
    assert english["modalities"]["text"]["present"] and "door" in english["transcript"]


def test_white_noise_has_no_voice_and_so_no_evidence(tmp_path):
    noise = np.random.default_rng(0).normal(0.0, 0.1, 3 * SAMPLE_RATE).astype(np.float32)  # the gate's real input
    path = tmp_path / "noise.wav"
    soundfile.write(path, noise, SAMPLE_RATE)
    run = predict([path], out_dir=tmp_path / "out", modalities="voice,words")
    assert not run.results and len(run.failures) == 1  # an audio file with neither speech nor face
    assert "no usable modality" in run.failures[0][1] and "no speech" in run.failures[0][1].split(": ", 1)[1]


def test_a_hiss_only_stretch_of_a_recording_has_no_voice(data_root, tmp_path):
    speech = load_audio(data_root / _KIDS, sample_rate=SAMPLE_RATE)
    hiss = np.random.default_rng(1).normal(0.0, 0.02, 12 * SAMPLE_RATE).astype(np.float32)
    path = tmp_path / "speech_then_hiss.wav"
    soundfile.write(path, np.concatenate([speech, hiss]), SAMPLE_RATE)
    predict([path], out_dir=tmp_path / "out", modalities="voice")
    utterances = _utterances(tmp_path / "out", path)
    speech_end = speech.size / SAMPLE_RATE
    voiced = [u for u in utterances if u["modalities"]["audio"]["present"]]
    hissed = [u for u in utterances if u["start_s"] >= speech_end]
    assert voiced and all(u["start_s"] < speech_end for u in voiced)
    assert hissed and all(u["modalities"]["audio"] == {"present": False, "reason": "no speech"} for u in hissed)
    assert all(u["fused"] == {"label": None, "reason": "no evidence", "scores": None, "modalities_used": []}
               for u in hissed)
