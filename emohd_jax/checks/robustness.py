"""The voice tower under the channels a user's recordings come through: RAVDESS 17–20 clean, noisy, reverberant,
over a phone line and through mp3.

    python -m emohd_jax.checks.robustness --config voice_whisper:ravdess [--config voice_whisper:loco_tess ...]

Each condition corrupts the decoded recording (before the speech trim, as a real channel would), its features
are cached once (`work/robustness_voice/<condition>.npz`, shared by every run), and each run's head scores them
normalised two ways: with its training corpora's statistics ('global', one clip at a time) and with the
condition's own statistics over the 208 clips ('folder', `--normalize folder` on a folder of such clips).
Writes `reports/robustness_voice/robustness.json` and `.md`.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Callable, Sequence

import numpy as np

from emohd_jax.audio import waveform_augment as wa

SEED = 0
CONDITIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray] | None] = {
    "clean": None,
    "noise_20db": lambda w, rng: wa.add_noise(w, 20.0, rng, kind="pink"),
    "noise_10db": lambda w, rng: wa.add_noise(w, 10.0, rng, kind="pink"),
    "reverb_rt60_0.6s": lambda w, rng: wa.reverberate(w, wa.room_impulse_response(0.6, rng)),
    "telephone": lambda w, rng: wa.telephone(w),
    "mp3_32kbps": lambda w, rng: wa.codec_round_trip(w, "mp3", 32),
}


def condition_features(extractor, utterances, condition: str, cache: pathlib.Path) -> list[np.ndarray]:
    """Per utterance hidden [frames, layers, width] float16 of the corrupted recording, cached in `cache`."""
    from emohd_jax.audio.io import load_audio

    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return [data[str(i)] for i in range(len(utterances))]
    corrupt = CONDITIONS[condition]
    out = []
    for i, utterance in enumerate(utterances):
        wave = load_audio(utterance.audio)
        if corrupt is not None:
            wave = corrupt(wave, np.random.default_rng([SEED, i]))
        out.extend(extractor.features([extractor.prepare_wave(wave)]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{str(i): h for i, h in enumerate(out)})
    return out


def head_probs(config, features: Sequence[np.ndarray], mean: np.ndarray, std: np.ndarray,
               batch_size: int = 32) -> np.ndarray:
    """probs [n, 7] of the run's best head on features normalised with (mean, std) [layers, width]."""
    import jax
    from flax import nnx

    from emohd_jax.input_pipeline import collate
    from emohd_jax.models.voice_head import frame_mask
    from emohd_jax.train import sharding
    from emohd_jax.train.trainer import make_task, restore_for_eval

    task = make_task(config)
    model, weights = restore_for_eval(config, task, sharding.make_mesh(config.mesh.model))
    head = nnx.merge(model.graphdef, weights["params"], model.rng_state, weights["other"])
    forward = jax.jit(lambda hidden: jax.nn.softmax(head(hidden, frame_mask(hidden), mean, std), axis=-1))
    probs = [np.asarray(forward(collate([{"hidden": h} for h in features[i:i + batch_size]],
                                        padded=task.padded)["hidden"]))
             for i in range(0, len(features), batch_size)]
    return np.concatenate(probs)


def main(argv: list[str]) -> int:
    from data_pipeline.prepare import read_source
    from emohd_jax.audio.whisper_features import GroupStatistics
    from emohd_jax.run_config import load_config
    from emohd_jax.checks.crosscorpus import score, summary
    from emohd_jax.train.trainer import make_task

    from emohd_jax.errors import CommandLineParser

    parser = CommandLineParser(prog="emohd check robustness", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, metavar="SPEC",
                        help="a voice_whisper run config (repeat to compare runs), e.g. voice_whisper:ravdess,corpus,clean")
    specs = parser.parse_args(argv).config
    configs = {spec: load_config(["--config", spec]) for spec in specs}
    first = next(iter(configs.values()))
    utterances, _ = read_source(first.data, "ravdess_dev")
    labels = np.asarray([u.label for u in utterances])
    extractor = make_task(first).extractor()
    table = {}
    for condition in CONDITIONS:
        features = condition_features(extractor, utterances, condition,
                                      pathlib.Path("work/robustness_voice") / f"{condition}.npz")
        records = ({"hidden": h, "view": 0, "corpus_id": 0} for h in features)
        folder_mean, folder_std = GroupStatistics.from_records(records, ("corpus_id",))["corpus_id"].mean_std()
        for spec, config in configs.items():
            global_mean, global_std = make_task(config).global_normalization()
            for norm, (mean, std) in {"global": (global_mean, global_std), "folder": (folder_mean, folder_std)}.items():
                result = summary(score(labels, head_probs(config, features, mean, std), "ravdess"))
                table.setdefault(spec, {}).setdefault(norm, {})[condition] = result
                print(spec, norm, condition, f"acc {result['accuracy']:.2f} wF1 {result['weighted_f1']:.2f}", flush=True)
    out = pathlib.Path("reports/robustness_voice")
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps({"set": "RAVDESS actors 17-20 (208 clips, calm dropped)",
                                                     "conditions": {c: _describe(c) for c in CONDITIONS},
                                                     "runs": table}, indent=1))
    lines = ["# Voice tower robustness, RAVDESS actors 17–20 (weighted F1 / accuracy, %)", "",
             "| run | normalisation | " + " | ".join(CONDITIONS) + " |", "|---|---|" + "---|" * len(CONDITIONS)]
    for spec, norms in table.items():
        for norm, cells in norms.items():
            lines.append(f"| {spec} | {norm} | " + " | ".join(
                f"{cells[c]['weighted_f1']:.1f} / {cells[c]['accuracy']:.1f}" for c in CONDITIONS) + " |")
    lines += ["", "Conditions: " + "; ".join(f"{c}: {_describe(c)}" for c in CONDITIONS),
              "'global': the run's training corpora statistics; 'folder': the 208 corrupted clips' own statistics.",
              "Command: python -m emohd_jax.checks.robustness " + " ".join(f"--config {s}" for s in specs)]
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    return 0


def _describe(condition: str) -> str:
    return {"clean": "as recorded", "noise_20db": "pink noise at 20 dB SNR", "noise_10db": "pink noise at 10 dB SNR",
            "reverb_rt60_0.6s": "procedural room, RT60 0.6 s, direct = reverberant energy",
            "telephone": "300-3400 Hz, 8 kHz, mu-law", "mp3_32kbps": "LAME mp3 at 32 kbit/s (16 kHz)"}[condition]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
