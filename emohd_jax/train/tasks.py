"""What differs between towers: how the model is built and initialised, and how a batch feeds it.

Everything else (loss, optimiser, sharding, checkpoints, evaluation) is shared by the trainer.
"""

from __future__ import annotations

import pathlib
from typing import Protocol

import grain
import jax
import jax.numpy as jnp
from flax import nnx

from emohd_jax import face_tta
from emohd_jax.classes import NUM_CLASSES
from emohd_jax.train.losses import cross_entropy

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Task(Protocol):
    padded: dict[str, int]          # batch fields padded to a bucketed length, with their pad value
    model_fields: tuple[str, ...]   # batch fields the model reads
    target_fields: tuple[str, ...]  # batch fields the loss reads
    augment: grain.transforms.RandomMap | None  # per-record training augmentation
    evaluates: bool                 # predicts the seven classes: dev metrics select the best checkpoint

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def load_pretrained(self, model: nnx.Module) -> None: ...

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array: ...

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]: ...

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None: ...


class ClassifierTask:
    """What every seven-class tower shares: weighted cross-entropy on `label`, nothing to export."""

    target_fields = ("label",)
    evaluates = True

    def loss(self, model: nnx.Module, batch: dict, *, weights: jax.Array,
             label_smoothing: float) -> tuple[jax.Array, jax.Array]:
        """(loss, accuracy) on a training batch."""
        logits = self.logits(model, batch, train=True)
        valid = jnp.ones(batch["label"].shape, jnp.float32)
        loss = cross_entropy(logits, batch["label"], weights, valid, label_smoothing)
        return loss, (logits.argmax(-1) == batch["label"]).mean()

    def finish(self, model: nnx.Module, workdir: pathlib.Path) -> None:
        """The checkpoints are the product; nothing else to write."""


class TextTask(ClassifierTask):
    """Transformer encoder (DistilBERT or BERT layout) → CLS/mean pooling → MLP head (SPEC §4.4)."""

    padded = {"input_ids": 0, "token_type_ids": 0}
    model_fields = ("input_ids", "token_type_ids")
    augment = None

    def __init__(self, config):
        self.config = config

    def _source_dir(self) -> pathlib.Path:
        from emohd_jax.convert.hf_text import minilm_dir

        init = self.config.model.init
        return minilm_dir() if init == "minilm" else pathlib.Path(init)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.convert.hf_text import text_encoder_config
        from emohd_jax.models.text_encoder import TextClassifier

        return TextClassifier(text_encoder_config(self._source_dir()), NUM_CLASSES, pooling=self.config.model.pooling,
                              head_hidden_size=self.config.model.head_hidden, head_dropout=self.config.model.head_dropout,
                              dtype=DTYPES[self.config.model.dtype], rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        from emohd_jax.convert.hf_text import load_text_encoder

        if self.config.model.pretrained:
            nnx.update(model.encoder, nnx.state(load_text_encoder(self._source_dir()), nnx.Param))

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        ids = batch["input_ids"]
        return model(ids, ids != 0, batch["token_type_ids"], deterministic=not train)


class ImageTask(ClassifierTask):
    """Face expression net on stored faces (SPEC §2.3 stage 1): mini-Xception (offline default) or ResNet50.

    mini-Xception starts from the committed FER2013 weights (or `model.init`, a safetensors file);
    ResNet50 from `model.init`, a VGGFace2 .pkl or torchvision .pth, with a fresh 7-way head.
    `eval.flip` / `eval.shift`: at evaluation, probabilities are averaged over the mirrored and ±shift px
    shifted faces (emohd_jax.face_tta).
    """

    padded: dict[str, int] = {}
    model_fields = ("face",)

    def __init__(self, config):
        from emohd_jax.train.face_augment import FaceAugment

        self.config = config.model
        self.flip = bool(config.eval.get("flip", False))
        self.shift = int(config.eval.get("shift", 0))
        augment = config.get("augment")
        self.augment = FaceAugment(**{k: v for k, v in augment.items() if k != "enabled"}) \
            if augment is not None and augment.enabled else None

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        if self.config.backbone == "mini_xception":
            from emohd_jax.models.mini_xception import MiniXception

            return MiniXception(NUM_CLASSES, rngs=rngs)
        if self.config.backbone == "resnet50":
            from emohd_jax.models.resnet50 import ResNet50, ResNetConfig

            return ResNet50(ResNetConfig(variant=self.config.variant, num_classes=NUM_CLASSES), rngs=rngs)
        raise ValueError(f"unknown face backbone {self.config.backbone!r} (known: mini_xception, resnet50)")

    def load_pretrained(self, model: nnx.Module) -> None:
        if self.config.backbone == "mini_xception":
            from emohd_jax.models import mini_xception

            source = mini_xception.load(self.config.init or mini_xception.WEIGHTS)
        else:
            from emohd_jax.convert.resnet50 import load_torchvision, load_vggface2

            if not self.config.init:
                raise ValueError("ResNet50 needs --config.model.init=<resnet50_ft_weight.pkl or resnet50.pth>")
            source = (load_vggface2 if self.config.variant == "vggface2" else load_torchvision)(self.config.init)
            source.fc = model.fc  # identity / ImageNet head replaced by the fresh 7-way one
        nnx.update(model, nnx.state(source))

    def inputs(self, faces: jax.Array) -> jax.Array:
        """Stored uint8 faces [batch, h, w, c] → the backbone's float input."""
        if self.config.backbone == "mini_xception":
            from emohd_jax.models.mini_xception import normalize

            return normalize(faces)
        from emohd_jax.models.resnet50 import preprocess_faces

        return preprocess_faces(faces, self.config.variant)

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

    def __init__(self, config):
        self.config = config.model
        self.backbone_task = ImageTask(config)
        self.augment = self.backbone_task.augment
        key = (self.config.backbone, self.config.features)
        if key not in FEATURE_DIMS:
            raise ValueError(f"model.features={key[1]!r} is not available for {key[0]} (known: {sorted(FEATURE_DIMS)})")
        self.feature_dim = FEATURE_DIMS[key]

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.frozen_backbone import FrozenBackboneMLP

        return FrozenBackboneMLP(self.backbone_task.build_model(rngs), self.feature_dim, self.config.head_hidden,
                                 self.config.head_dropout, pooled=self.config.features == "pooled", rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        if not self.config.init:
            self.backbone_task.load_pretrained(model.backbone)
            return
        from emohd_jax.train.checkpointing import restore_weights
        from emohd_jax.train.trainer import split_model

        _, params, _, other = split_model(nnx.eval_shape(lambda: self.backbone_task.build_model(nnx.Rngs(0))))
        weights = restore_weights(self.config.init, {"params": params, "other": other})
        nnx.update(model.backbone, weights["params"], weights["other"])

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        return self.backbone_task.logits(model, batch, train=train)


class AudioTask(ClassifierTask):
    """VGGish-shaped CNN on 0.96 s log-mel patches → 7-way head (SPEC §3); the trainer decides clips from patches."""

    padded: dict[str, int] = {}
    model_fields = ("patches",)

    def __init__(self, config):
        from emohd_jax.train.audio_augment import LogMelAugment

        self.config = config.model
        augment = config.get("augment")
        self.augment = LogMelAugment(**{k: v for k, v in augment.items() if k != "enabled"}) \
            if augment is not None and augment.enabled else None

    def vggish_config(self):
        """The size preset ('small' | 'full') with every conv/FC width times `width`, and the configured dropout."""
        import dataclasses

        from emohd_jax.models.vggish import VGGISH_CONFIGS

        base = VGGISH_CONFIGS[self.config.size]
        scale = lambda width: max(1, round(width * self.config.width))  # noqa: E731
        return dataclasses.replace(base, conv_blocks=tuple(tuple(map(scale, block)) for block in base.conv_blocks),
                                   fc_widths=tuple(map(scale, base.fc_widths)), dropout=self.config.dropout)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        from emohd_jax.models.vggish import VGGishClassifier

        return VGGishClassifier(self.vggish_config(), rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        """VGGish trunk from `init`: a converted .safetensors, a torchvggish .pth, or TF variables (.npz / ckpt)."""
        from emohd_jax.convert import vggish as convert
        from emohd_jax.models.vggish import load_vggish_weights

        path = self.config.init
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
        patches = (batch["patches"] - self.config.input_mean) / self.config.input_std  # [batch, 96, 64]
        return model(patches, train=train)  # → logits: [batch, classes]


def make_task(config) -> Task:
    from emohd_jax.train.mlm import MaskedLMTask

    tasks = {"text": TextTask, "mlm": MaskedLMTask, "image": ImageTask, "feature_mlp": FeatureMLPTask,
             "audio": AudioTask}
    if config.task not in tasks:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(tasks)}")
    return tasks[config.task](config)
