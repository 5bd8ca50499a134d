"""A classifier head over a frozen backbone's features, trained on feature shards (`config.task='feature_head'`).

When the backbone is frozen (the face stage-2 MLP over mini-Xception's 4×4×128 map, a head over a frozen
text encoder), running it every step of every run is waste: `emohd prepare` on a feature-head config runs
it once per utterance (`FrozenFeatureExtractor`, through the same prepare → tfds shards path as every
tower) and `emohd train` / `emohd sweep` train heads on the stored features. Test-time views (the face
mirrored and shifted, `eval.flip` / `eval.shift` of the backbone config) are stored per record, `views`
of them: training picks one view per record and step (the mirror augmentation), evaluation averages the
class probabilities over all of them, as `ImageTask` does on the faces.
"""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax.classes import NUM_CLASSES
from emohd_jax.extract import BASE_FIELDS, Field, Record, Utterance
from emohd_jax.input_pipeline import bucket_length
from emohd_jax.towers import ClassifierTask, FeatureMLPTask, TextTask, make_tower
from emohd_jax.train.optim import divide_by_scalar
from emohd_jax.xla_cpu import inference_jit


class DropoutRate(nnx.Variable):
    """A dropout rate held as model state, not a Python constant: one compiled step serves every rate."""


class FeatureHead(nnx.Module):
    """features: [batch, d] → logits: [batch, classes]: optional BatchNorm, a hidden ReLU layer, dropout, linear.

    `hidden=0` makes it linear (dropout on the features). The BatchNorm standardises backbone features whose
    positions differ in scale (a conv map, flattened), as `frozen_backbone.MLPHead` does.
    """

    def __init__(self, in_features: int, hidden: int, dropout: float, *, input_norm: bool, rngs: nnx.Rngs):
        self.norm = nnx.BatchNorm(in_features, rngs=rngs) if input_norm else None
        self.hidden = nnx.Linear(in_features, hidden, rngs=rngs) if hidden else None
        self.out = nnx.Linear(hidden or in_features, NUM_CLASSES, rngs=rngs)
        self.rate = DropoutRate(jnp.asarray(dropout, jnp.float32))
        self.dropout_rngs = rngs["dropout"].fork()

    def dropout(self, x: jax.Array) -> jax.Array:
        keep = 1.0 - self.rate[...]
        mask = jax.random.bernoulli(self.dropout_rngs(), keep, x.shape)
        return jax.lax.select(mask, divide_by_scalar(x, keep), jnp.zeros_like(x))  # a trial batch rounds alike

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.norm is not None:
            x = self.norm(x, use_running_average=not train)
        if self.hidden is not None:
            x = nnx.relu(self.hidden(x))
        return self.out(self.dropout(x) if train else x)


def backbone_views(config) -> tuple[dict, dict]:
    """(train views, eval views) of the backbone's input as `vision.tta.views` keywords; text has one view."""
    if config.task == "text":
        return {}, {}
    return {"flip": bool(config.augment.enabled and config.augment.flip)}, \
        {"flip": bool(config.eval.get("flip", False)), "shift": int(config.eval.get("shift", 0))}


class FrozenFeatureExtractor:
    """An utterance → the backbone tower's records → its frozen features [views, d] (float32), one jitted call each."""

    name = "frozen_features"

    def __init__(self, backbone_config, stills: bool, train_split: str):
        self.config = backbone_config
        self.task = make_tower(backbone_config)
        if not isinstance(self.task, (TextTask, FeatureMLPTask)):
            raise ValueError(f"backbone task {backbone_config.task!r} has no frozen features (text, feature_mlp)")
        self.base = self.task.extractor(stills=stills)
        self.train_split = train_split
        self.train_views, self.eval_views = backbone_views(backbone_config)
        module = self.task.build_model(nnx.Rngs(0))
        self.task.load_pretrained(module)
        graphdef, state = nnx.split(module)
        self.feature_dim = int(nnx.eval_shape(lambda: self._features(module, self._example())).shape[-1])
        self.fields = {**BASE_FIELDS, "features": Field((None, self.feature_dim), "float32")}
        self._forward = inference_jit(lambda state, fields, views: self._features(nnx.merge(graphdef, state), fields,
                                                                                  **dict(views)),
                                      static_argnums=2)
        self._state = state

    def _example(self) -> dict:
        if isinstance(self.task, TextTask):
            return {"input_ids": jnp.ones((1, 16), jnp.int32), "token_type_ids": jnp.zeros((1, 16), jnp.int32)}
        size = {"mini_xception": (64, 64, 1), "resnet50": (224, 224, 3)}[self.config.model.backbone]
        return {"face": jnp.zeros((1, *size), jnp.uint8)}

    def _features(self, module, fields: dict, flip: bool = False, shift: int = 0) -> jax.Array:
        """[views, d]: the pooled text vector, or the face backbone's features of each view of the face."""
        if isinstance(self.task, TextTask):
            ids = fields["input_ids"]
            return module.features(ids, ids != 0, fields["token_type_ids"])
        from emohd_jax.vision.tta import views

        faces = jnp.concatenate(views(fields["face"], flip=flip, shift=shift))  # [views, h, w, c]
        return module.features(self.task.backbone_task.inputs(faces))

    def options(self) -> dict:
        return {"backbone": {"task": self.config.task, "extractor": self.base.name, **self.base.options(),
                             "model": {k: v for k, v in self.config.model.to_dict().items() if not k.startswith("head")}},
                "train_views": self.train_views, "eval_views": self.eval_views}

    def set_dialogues(self, utterances) -> None:
        if hasattr(self.base, "set_dialogues"):
            self.base.set_dialogues(utterances)

    def records(self, utterance: Utterance) -> list[Record]:
        views = self.train_views if utterance.split == self.train_split else self.eval_views
        out = []
        for record in self.base.records(utterance):
            fields = {k: np.asarray(record[k])[None] for k in self.task.model_fields}
            if isinstance(self.task, TextTask):  # padded to a bucket: one compilation per bucket, not per length
                length = bucket_length(fields["input_ids"].shape[1])
                fields = {k: np.pad(v, ((0, 0), (0, length - v.shape[1]))) for k, v in fields.items()}
            features = self._forward(self._state, fields, tuple(sorted(views.items())))
            out.append({"uid": record["uid"], "label": record["label"], "features": np.asarray(features, np.float32)})
        return out


class PickView(grain.transforms.RandomMap):
    """Training: one stored view per record and step ([views, d] → [d]), from grain's per-record RNG."""

    def random_map(self, record: dict, rng: np.random.Generator) -> dict:
        features = record["features"]
        return {**record, "features": features[rng.integers(len(features))]}


class FeatureHeadTask(ClassifierTask):
    """`FeatureHead` on feature shards; `config.backbone` is the frozen tower's own config (it makes the shards)."""

    padded: dict[str, int] = {}
    model_fields = ("features",)

    def __init__(self, config):
        self.config = config
        self.backbone = config.backbone
        self.modality = {"text": "text", "feature_mlp": "visual"}.get(self.backbone.task, self.backbone.task)
        self.augment = PickView()
        self.feature_dim = config.model.feature_dim

    def extractor(self, stills: bool = False) -> FrozenFeatureExtractor:
        return FrozenFeatureExtractor(self.backbone, stills, self.config.data.train_split)

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        model = self.config.model
        return FeatureHead(self.feature_dim, model.head_hidden, model.head_dropout, input_norm=model.input_norm,
                           rngs=rngs)

    def load_pretrained(self, model: nnx.Module) -> None:
        """Nothing to load: the backbone's part is in the shards."""

    def logits(self, model: nnx.Module, batch: dict, *, train: bool) -> jax.Array:
        features = batch["features"]  # training: [batch, d]; evaluation: [batch, views, d]
        if train:
            return model(features, train=True)
        b, views, d = features.shape
        logits = model(features.reshape(b * views, d), train=False).reshape(b, views, -1)
        if views == 1:
            return logits[:, 0]
        return jnp.log(jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=1))  # softmax → the mean
