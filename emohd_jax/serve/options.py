"""The numeric options of `predict` (CLI flags and `Predictor`/`emohd_jax.predict` keywords), each with its
default and the range that makes sense: a value outside it is a usage error naming the flag, never a silent
misprediction (`--block-s 0` cut a 2 s clip into dozens of slices; `--window-s 0` divided by zero)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from typing import Iterable, Mapping

from emohd_jax.classes import MODALITIES
from emohd_jax.errors import UsageError

MODALITY_NAMES = {"face": "visual", "voice": "audio", "words": "text"}


@dataclasses.dataclass(frozen=True)
class NumericOption:
    name: str        # the Python keyword (`block_s`); the flag is `--block-s`
    default: float
    low: float       # smallest allowed value (inclusive)
    high: float      # largest allowed value (inclusive); math.inf: no bound
    unit: str        # "s" or "" (a count: an integer)
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def problem(self, value) -> str | None:
        """Why `value` is not allowed, or None."""
        if self.unit == "" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            return f"must be a whole number, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number of seconds, got {value!r}"
        if math.isnan(value) or not self.low <= value <= self.high:
            return f"must be {self.range_text()}, got {value!r}"
        return None

    def range_text(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return (f"between {self.low:g} and {self.high:g}{unit}" if math.isfinite(self.high)
                else f"at least {self.low:g}{unit}")

    def parse(self, text: str) -> float | int:
        """argparse `type=`: the value, or ArgumentTypeError (argparse names the flag in the message)."""
        try:
            value = int(text) if self.unit == "" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole number' if self.unit == '' else 'number'}: {text!r}")
        if (problem := self.problem(value)) is not None:
            raise argparse.ArgumentTypeError(problem)
        return value


# Bounds: a block holds at least one long utterance and the carried-over speech; a window and an utterance
# hold at least one 0.96 s voice patch; an utterance may be unbounded (`emohd system-eval`: one per clip).
NUMERIC_OPTIONS: dict[str, NumericOption] = {o.name: o for o in (
    NumericOption("max_utterance_s", 8.0, 1.0, math.inf, "s",
                  "a recording up to this long is one utterance; longer ones are cut at speech segments"),
    NumericOption("window_s", 4.0, 1.0, 600.0, "s", "window length over stretches without speech"),
    NumericOption("block_s", 120.0, 10.0, 3600.0, "s",
                  "seconds of audio decoded and processed at once: memory stays flat however long the input"),
    NumericOption("frame_chunk", 16, 1, 1024, "",
                  "sampled video frames through the face detector at once (bounds the memory of long videos)"),
    NumericOption("carry_s", 1.0, 0.0, 5.0, "s",
                  "speech this close to a block's end starts the next block (not cut at the boundary)"),
)}
DEFAULTS: dict[str, float] = {name: option.default for name, option in NUMERIC_OPTIONS.items()}
CLI_OPTIONS = ("max_utterance_s", "window_s", "block_s", "frame_chunk")  # carry_s: API only


def predictor_options() -> dict[str, object]:
    """Every `Predictor` keyword besides the bundle, with its default (its signature holds the same; a test
    checks): what a result's resume key records, known without importing the predictor (and JAX)."""
    from emohd_jax.asr.trust import WordsPolicy

    return {"modalities": None, "transcriber": None, "words_policy": WordsPolicy(), **DEFAULTS}


def check_numeric_options(options: Mapping[str, object]) -> None:
    """UsageError naming the flag of the first numeric option in `options` outside its range; others are ignored."""
    for name, value in options.items():
        option = NUMERIC_OPTIONS.get(name)
        if option is not None and (problem := option.problem(value)) is not None:
            raise UsageError(f"{option.flag} / {name}", problem, f"default {option.default:g}")


def requested_modalities(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """'face,voice,words' (or visual, audio, text; None: all) → fused modality names, in fusion order."""
    if names is None:
        return MODALITIES
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    wanted = set()
    for name in names:
        key = name.strip().lower()
        if key not in MODALITY_NAMES and key not in MODALITIES:
            raise UsageError(f"modality {name!r}", "unknown modality", "use face, voice and/or words, e.g. "
                             "--modalities voice,words")
        wanted.add(MODALITY_NAMES.get(key, key))
    if not wanted:
        raise UsageError("--modalities", "no modality named", "use face, voice and/or words")
    return tuple(m for m in MODALITIES if m in wanted)
