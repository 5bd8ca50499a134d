"""`emohd predict --normalize folder`: the voice features standardised with the statistics of the folder's own
speech (what transfers to a source the tower never heard: the cross-corpus tables), gathered in a first,
voice-only pass through the same cut and extraction as predict itself. Real TESS clips, voice only."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from emohd_jax.audio.io import SAMPLE_RATE, load_audio
from emohd_jax.audio.whisper_features import FeatureMoments
from emohd_jax.bundle import load_bundle
from emohd_jax.serve.batch import predict
from emohd_jax.serve.predictor import Predictor
from tests.data_paths import DATA

TESS = DATA / "tess" / "TESS_Toronto_emotional_speech_set_data"
CLIPS = [TESS / "OAF_angry" / "OAF_base_angry.flac", TESS / "OAF_sad" / "OAF_base_sad.flac",
         TESS / "YAF_happy" / "YAF_base_happy.flac"]
VOICE = {"modalities": "voice", "progress": False}


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
    clips = tmp_path / "tess"
    clips.mkdir()
    for clip in CLIPS[:2]:
        shutil.copy(clip, clips / clip.name)
    return clips


def test_folder_statistics_are_the_moments_of_the_clips_speech(bundle):
    """The first pass's (mean, std) equal those of the voice extractor's features of each clip as prepare makes
    them (a short clip is one utterance), gathered directly."""
    predictor = Predictor(bundle, modalities="voice")
    (mean, std), frames = predictor.folder_statistics(CLIPS[:2])
    extractor = bundle.towers["audio"].task.extractor()
    direct = FeatureMoments()
    for clip in CLIPS[:2]:
        direct.add(extractor.features([extractor.prepare_wave(load_audio(clip, sample_rate=SAMPLE_RATE))])[0])
    want_mean, want_std = direct.mean_std()
    assert frames == direct.count > 0
    np.testing.assert_allclose(mean, want_mean, atol=2e-3)
    np.testing.assert_allclose(std, want_std, rtol=2e-3, atol=2e-3)


def test_normalize_folder_standardises_with_the_folder_and_its_contents_key_the_results(bundle, folder, tmp_path):
    out = tmp_path / "out"
    training = predict(folder, bundle, out_dir=tmp_path / "training", **VOICE)
    run = predict(folder, bundle, out_dir=out, normalize="folder", **VOICE)
    assert run.exit_code == 0 and len(run.results) == 2
    summary = json.loads((out / "run.json").read_text())
    assert summary["options"]["normalize"] == "folder"
    (stats,) = summary["voice_statistics"].values()
    assert list(summary["voice_statistics"]) == [str(folder)]
    assert stats["inputs"] == 2 and stats["speech_frames"] > 0 and stats["standardised_with"] == "folder"

    def voice(results):
        return np.asarray([r["utterances"][0]["modalities"]["audio"]["probs"] for r in results])

    assert np.abs(voice(run.results) - voice(training.results)).max() > 1e-3   # other statistics, other output
    assert predict(folder, bundle, out_dir=out, normalize="folder", **VOICE).resumed == [str(p) for p in
                                                                                        sorted(folder.iterdir())]
    shutil.copy(CLIPS[2], folder / CLIPS[2].name)  # the folder's statistics change: every result is redone
    again = predict(folder, bundle, out_dir=out, normalize="folder", **VOICE)
    assert again.resumed == [] and len(again.results) == 3


def test_normalize_folder_needs_the_voice(bundle, folder, tmp_path):
    from emohd_jax.errors import UsageError

    with pytest.raises(UsageError, match="--normalize folder"):
        predict(folder, bundle, out_dir=tmp_path / "out", normalize="folder", modalities="words", progress=False)
    with pytest.raises(UsageError, match="normalize='speaker'"):
        predict(folder, bundle, normalize="speaker", **VOICE)
