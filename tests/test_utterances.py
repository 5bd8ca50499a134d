"""Utterance planning: spans tile the recording, follow the speech, and stay short enough."""

import pytest
from hypothesis import given, settings, strategies as st

from emohd_jax.utterances import SpeechSegment, plan_utterances


def _check_tiling(spans, duration, longest=8.0):
    assert spans[0].start_s == 0.0 and spans[-1].end_s == pytest.approx(duration)
    for a, b in zip(spans, spans[1:]):
        assert a.end_s == pytest.approx(b.start_s)
    assert all(0 < s.end_s - s.start_s <= longest + 1e-6 for s in spans)


def test_a_short_clip_is_one_utterance_with_all_its_words():
    spans = plan_utterances(3.2, [SpeechSegment(0.4, 1.5, "Don't forget"), SpeechSegment(1.5, 2.9, "a jacket.")])
    assert [(s.start_s, s.end_s, s.source, s.text) for s in spans] == [(0.0, 3.2, "clip", "Don't forget a jacket.")]
    assert plan_utterances(3.2, []) [0].text is None


def test_long_recording_follows_speech_and_windows_the_silence():
    speech = [SpeechSegment(2.0, 5.0, "hello there"), SpeechSegment(5.2, 7.0, "how are you"),
              SpeechSegment(30.0, 49.0, "one two three four five six")]
    spans = plan_utterances(60.0, speech)
    _check_tiling(spans, 60.0)
    asr = [s for s in spans if s.source == "asr"]
    assert [s.text for s in asr[:2]] == ["hello there", "how are you"]
    assert len(asr) == 5 and " ".join(s.text for s in asr[2:]) == "one two three four five six"  # 19 s → 3 pieces
    assert spans[0].source == "window" and spans[0].end_s == pytest.approx(2.0)
    assert asr[0].end_s == pytest.approx(5.2)  # the 0.2 s gap is absorbed, not a window of its own
    windows = [s for s in spans if s.source == "window" and 7.0 <= s.start_s < 30.0]
    assert len(windows) == 6 and all(s.text is None for s in windows)  # 23 s of silence in ≈4 s windows


def test_silence_only_gives_windows_and_out_of_range_or_overlapping_segments_are_tamed():
    spans = plan_utterances(20.0, None)
    assert {s.source for s in spans} == {"window"} and len(spans) == 5
    _check_tiling(spans, 20.0)
    messy = [SpeechSegment(15.0, 25.0, "late"), SpeechSegment(-1.0, 3.0, "early"), SpeechSegment(2.0, 4.0, "overlap")]
    spans = plan_utterances(18.0, messy)
    _check_tiling(spans, 18.0)
    assert [s.text for s in spans if s.source == "asr"] == ["early", "overlap", "late"]


@settings(max_examples=100, deadline=None)
@given(duration=st.floats(0.1, 600.0),
       segments=st.lists(st.tuples(st.floats(-5, 650), st.floats(0.01, 40)), max_size=30))
def test_any_plan_tiles_the_recording(duration, segments):
    speech = [SpeechSegment(a, a + length, "w " * 3) for a, length in segments]
    spans = plan_utterances(duration, speech)
    _check_tiling(spans, duration)


def test_speech_without_words_is_planned_as_vad_spans():
    """Words not requested: the VAD's stretches (no text) still cut a long recording, as 'vad' spans."""
    spans = plan_utterances(40.0, [SpeechSegment(2.0, 5.0, None), SpeechSegment(20.0, 31.0, None)])
    _check_tiling(spans, 40.0)
    vad = [(s.start_s, s.end_s) for s in spans if s.source == "vad"]
    assert vad == [(2.0, 5.0), (20.0, 25.5), (25.5, 31.0)] and all(s.text is None for s in spans)
    assert {s.source for s in spans} == {"window", "vad"}
    assert plan_utterances(3.0, [SpeechSegment(0.5, 2.0, None)]) [0].text is None  # a clip: one utterance
