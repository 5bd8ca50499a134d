"""Voice → frozen Whisper encoder features, every layer: what the voice head (models.voice_head) trains and predicts on.

audio → mono 16 kHz → silence check → speech trimmed (quiet ends cut, `trim_db`) → (training views only:
`waveform_augment.random_view`) → loudness normalised → Whisper log-mel, padded to a whole number of
`bucket_s` with a frame mask (one compiled encoder per bucket, never 30 s of zeros) → frozen encoder →
every layer's output, frame pairs averaged (`pool`: 50 Hz → 25 Hz halves the storage) → float16
[frames, layers + 1, width]. Offline `prepare` stores one record per view (a split named `*<augmented_suffix>`
holds `views` augmented copies of each clip, the others the clean clip); online predict calls `features` on
the clean wave. `corpus_id` / `speaker_id` (stable CRC32 of "dataset:split" / "dataset/speaker") name the
groups whose statistics normalise the features (`GroupStatistics`).
"""

from __future__ import annotations

import zlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from emohd_jax.audio import waveform_augment
from emohd_jax.audio.io import SAMPLE_RATE
from emohd_jax.errors import CorruptMediaError, NoAudioTrackError
from emohd_jax.extract import BASE_FIELDS, Field, Record, Utterance

MAX_SECONDS = 30.0  # Whisper's positions end at 30 s


def group_id(name: str) -> np.int32:
    """A stable int32 id of a group name (CRC32, 31 bits): the same in prepare, train and predict."""
    return np.int32(zlib.crc32(name.encode()) & 0x7FFFFFFF)


def corpus_key(utterance: Utterance, augmented_suffix: str = "_aug") -> str:
    """'dataset:split' with the augmented suffix removed: a split's clean and augmented records share a group."""
    split = utterance.split.removesuffix(augmented_suffix) if augmented_suffix else utterance.split
    return f"{utterance.dataset}:{split}"


def speaker_key(utterance: Utterance) -> str:
    return f"{utterance.dataset}/{utterance.speaker or utterance.uid}"


def speech_span(wave: np.ndarray, *, trim_db: float, margin_s: float = 0.2) -> slice:
    """The samples from the first to the last 20 ms frame within `trim_db` of the loudest, `margin_s` wider."""
    hop = SAMPLE_RATE // 50
    n = wave.size // hop
    if trim_db <= 0 or n < 2:
        return slice(0, wave.size)
    energy = np.square(wave[:n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    level = 10.0 * np.log10(energy + 1e-20)
    active = np.flatnonzero(level > level.max() - trim_db)
    margin = int(margin_s * SAMPLE_RATE)
    return slice(max(0, active[0] * hop - margin), min(wave.size, (active[-1] + 1) * hop + margin))


def pool_frames(hidden: np.ndarray, pool: int) -> np.ndarray:
    """hidden: [frames, ...] → [ceil(frames / pool), ...], each row the mean of `pool` consecutive frames (the last
    of fewer)."""
    if pool == 1:
        return hidden
    frames = hidden.shape[0]
    starts = np.arange(0, frames, pool)
    sums = np.add.reduceat(hidden.astype(np.float32), starts, axis=0)
    counts = np.minimum(pool, frames - starts).astype(np.float32)
    return sums / counts.reshape(-1, *([1] * (hidden.ndim - 1)))


class WhisperFeatureExtractor:
    """Frozen Whisper encoder features of an utterance's audio; one record per view (see the module docstring)."""

    name = "whisper_features"

    def __init__(self, *, model: str = "base", pool: int = 2, trim_db: float = 40.0, target_dbfs: float = -23.0,
                 bucket_s: float = 1.0, views: int = 2, augmented_suffix: str = "_aug", seed: int = 0):
        from emohd_jax.models.whisper_encoder import CONFIGS

        self.model_name, self.pool, self.trim_db, self.target_dbfs = model, int(pool), float(trim_db), float(target_dbfs)
        self.bucket_s, self.views, self.augmented_suffix, self.seed = float(bucket_s), int(views), augmented_suffix, seed
        config = CONFIGS[model]
        self.layers, self.width = config.layers + 1, config.width
        self.fields = {**BASE_FIELDS, "hidden": Field((None, self.layers, self.width), "float16"),
                       "view": Field((), "int32"),  # 0 clean, 1… augmented
                       "corpus_id": Field((), "int32"), "speaker_id": Field((), "int32")}
        self._encode = None

    def options(self) -> dict:
        return {"model": self.model_name, "pool": self.pool, "trim_db": self.trim_db, "target_dbfs": self.target_dbfs,
                "bucket_s": self.bucket_s, "views": self.views, "augmented_suffix": self.augmented_suffix,
                "seed": self.seed, "augment": "waveform_augment.random_view"}

    def _encoder(self):
        """The jitted encoder (loaded on first use): (mel [batch, frames, 80], mask [batch, frames]) → hidden
        [batch, positions, layers + 1, width] float16."""
        if self._encode is None:
            import jax
            import jax.numpy as jnp

            from emohd_jax.convert.whisper_ct2 import build_whisper_encoder, whisper_encoder_weights
            from emohd_jax.exported import CachedProgram

            # The weights are the program's arguments and the module is built only while tracing: a start that
            # finds the program saved builds none (its abstract build alone is ~0.4 s of a warm start).
            tensors, config, source = whisper_encoder_weights(self.model_name)
            tensors = jax.device_put(tensors)

            def encode(tensors, mel, mask):
                encoder = build_whisper_encoder(config, tensors, source=source)
                hidden = encoder(mel, mask)  # [layers + 1, batch, positions, width]
                return jnp.transpose(hidden, (1, 2, 0, 3)).astype(jnp.float16)

            program = CachedProgram(encode, name="whisper-encoder", key=f"{self.model_name}:{config}")
            self._encode = lambda mel, mask: program(tensors, mel, mask)
        return self._encode

    def prepare_wave(self, wave: np.ndarray) -> np.ndarray:
        """The speech of a decoded clip, cut to 30 s: [samples] (before augmentation and loudness)."""
        return wave[speech_span(wave, trim_db=self.trim_db)][:int(MAX_SECONDS * SAMPLE_RATE)]

    def features(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Prepared waves (`prepare_wave`, augmented or not) → per wave hidden: [frames, layers + 1, width] float16.

        Loudness-normalised, log-mel padded to one bucket (a whole number of `bucket_s`) with the frame mask,
        encoded in one batch, the real positions kept and pooled.
        """
        from emohd_jax.audio.whisper_mel import HOP, log_mel

        waves = [waveform_augment.normalize_loudness(w, self.target_dbfs) for w in waves]
        bucket = int(self.bucket_s * SAMPLE_RATE)
        padded = min(int(MAX_SECONDS * SAMPLE_RATE), bucket * max(-(-w.size // bucket) for w in waves))
        mels = np.stack([np.asarray(log_mel(np.pad(w, (0, padded - w.size)))) for w in waves])  # [batch, frames, 80]
        lengths = np.asarray([w.size // HOP for w in waves])
        mask = np.arange(mels.shape[1])[None, :] < lengths[:, None]
        hidden = np.asarray(self._encoder()(mels, mask))  # [batch, positions, layers + 1, width]
        return [pool_frames(h[:-(-n // 2)], self.pool).astype(np.float16) for h, n in zip(hidden, lengths)]

    def load(self, utterance: Utterance) -> np.ndarray:
        """The utterance's prepared wave: [samples]; BadInputError naming the file."""
        from emohd_jax.audio.io import check_not_silent, load_audio

        media = utterance.audio or utterance.video
        if media is None:
            raise NoAudioTrackError(utterance.uid, "utterance has neither an audio nor a video file")
        wave = load_audio(media, sample_rate=SAMPLE_RATE)
        if utterance.start_s is not None or utterance.end_s is not None:
            start = int(round((utterance.start_s or 0.0) * SAMPLE_RATE))
            wave = wave[start:None if utterance.end_s is None else int(round(utterance.end_s * SAMPLE_RATE))]
        if wave.size < SAMPLE_RATE // 10:
            raise CorruptMediaError(media, f"{wave.size} samples: too short for the voice tower (< 0.1 s)")
        check_not_silent(wave, media)
        return self.prepare_wave(wave)

    def augmented(self, utterance: Utterance) -> bool:
        return bool(self.augmented_suffix) and utterance.split.endswith(self.augmented_suffix)

    def records(self, utterance: Utterance) -> list[Record]:
        wave = self.load(utterance)
        if self.augmented(utterance):
            waves = [waveform_augment.random_view(
                wave, np.random.default_rng([self.seed, zlib.crc32(utterance.uid.encode()), view]))[0]
                for view in range(1, self.views + 1)]
        else:
            waves = [wave]
        ids = {"corpus_id": group_id(corpus_key(utterance, self.augmented_suffix)),
               "speaker_id": group_id(speaker_key(utterance))}
        first_view = 1 if self.augmented(utterance) else 0
        return [{"uid": utterance.uid, "label": utterance.label, "hidden": hidden, "view": np.int32(first_view + i),
                 **ids} for i, hidden in enumerate(self.features(waves))]


class FeatureMoments:
    """Frame count, sum and sum of squares of features [layers + 1, width] (float64), gathered one utterance at
    a time: the statistics of a folder's speech (`emohd predict --normalize folder`), the same standardisation
    the 'corpus' training runs apply per corpus, from a source that is not in the shards."""

    def __init__(self):
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, hidden: np.ndarray) -> None:
        """hidden: [frames, layers + 1, width], one utterance's features."""
        hidden = np.asarray(hidden, np.float64)
        self.count += hidden.shape[0]
        self.total = self.total + hidden.sum(axis=0)
        self.squares = self.squares + np.square(hidden).sum(axis=0)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) [layers + 1, width] float32, as `GroupStatistics.mean_std`; None before any frame."""
        if not self.count:
            return None
        one = GroupStatistics(np.zeros(1, np.int64), np.asarray([self.count], np.float64), self.total[None],
                              self.squares[None])
        return one.mean_std()


class GroupStatistics:
    """Per group (a corpus split or a speaker) frame count, sum and sum of squares of the features
    [layers + 1, width], float64: mean and std of any union of groups (the training corpora: `global`; one
    corpus or folder: per group)."""

    def __init__(self, ids: np.ndarray, count: np.ndarray, total: np.ndarray, squares: np.ndarray):
        self.ids, self.count, self.total, self.squares = ids, count, total, squares  # [G], [G], [G, L, W], [G, L, W]

    @classmethod
    def from_records(cls, records: Iterable[Mapping], keys: Sequence[str] = ("corpus_id", "speaker_id")
                     ) -> dict[str, "GroupStatistics"]:
        """key → statistics over the clean (view 0) records grouped by that field ('corpus_id', 'speaker_id')."""
        moments: dict[str, dict[int, FeatureMoments]] = {key: {} for key in keys}
        for record in records:
            if int(record["view"]) != 0:
                continue
            for key in keys:
                moments[key].setdefault(int(record[key]), FeatureMoments()).add(record["hidden"])  # [frames, L, W]
        out = {}
        for key, groups in moments.items():
            ids = np.asarray(sorted(groups), np.int64)
            out[key] = cls(ids, np.asarray([groups[i].count for i in ids], np.float64),
                           np.stack([groups[i].total for i in ids]), np.stack([groups[i].squares for i in ids]))
        return out

    def mean_std(self, ids: Iterable[int] | None = None, *, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std): [L, W] float32 over the frames of the groups `ids` together (None: all)."""
        rows = np.arange(self.ids.size) if ids is None else np.searchsorted(self.ids, np.asarray(list(ids)))
        count = self.count[rows].sum()
        mean = self.total[rows].sum(axis=0) / count
        var = np.maximum(self.squares[rows].sum(axis=0) / count - mean ** 2, 0.0)
        return mean.astype(np.float32), np.maximum(np.sqrt(var), min_std).astype(np.float32)

    def table(self, *, min_std: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids [G] int32 sorted, means [G, L, W], stds [G, L, W]) float32: one row per group."""
        pairs = [self.mean_std([i], min_std=min_std) for i in self.ids]
        return self.ids.astype(np.int32), np.stack([m for m, _ in pairs]), np.stack([s for _, s in pairs])

    def save(self, path) -> None:
        np.savez(path, ids=self.ids, count=self.count, total=self.total, squares=self.squares)

    @classmethod
    def load(cls, path) -> "GroupStatistics":
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"], data["count"], data["total"], data["squares"])
