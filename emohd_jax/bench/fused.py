"""`emohd bench fused`: the V+A+T inference path as one jitted function (towers + fusion), against PyTorch.

    emohd bench fused [--sets paper,bundle] [--batches 1,2,4] [--dtypes float32,bfloat16] [--small]
        → reports/bench/fused.json + fused.png

A batch of B utterances is B×`frames` face crops, B×`patches` 0.96 s log-mel patches and B token sequences of
`seq_len`. Two model sets, both built through the tower registry (the models `predict` serves, not copies):
  paper   the paper's full-size towers with random weights: ResNet50 (torchvision layout, 224×224) + MLP,
          full VGGish + 7-way head, DistilBERT-base (CLS) + MLP;
  bundle  the shipped offline bundle (mini-Xception + MLP, small VGGish, MiniLM + LoRA).
The JAX function takes the inputs donated and the next batch is put on the device while the current one
computes. FLOPs are counted analytically for the paper set (checked against XLA's cost analysis by a test)
and taken from XLA's cost analysis for the bundle; MFU divides the achieved FLOP/s by the device's peak
(the spec sheet for known accelerators; on a CPU, the best large matmul measured in the same run).
The same paper workload runs in PyTorch (transformers ResNetModel — torchvision's resnet50 where it imports —,
torchvggish's VGGish, transformers DistilBERT; eager and torch.compile in fp32, torch.compile under bf16 autocast
(eager too on GPU)), on the same weights where a converter maps them (VGGish, DistilBERT; ResNet50 with
torchvision), and outputs are compared. Each PyTorch tower is also timed alone, so every row carries the ratio
JAX / best PyTorch fused and per tower (`jax_over_best_torch`: fp32 against fp32, and best against best).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from emohd_jax import fusion
from emohd_jax.errors import CommandLineParser
from emohd_jax.measurement import save, speed_ratios, time_call, torch_variants
from emohd_jax.xla_cpu import inference_jit

MODALITIES = ("visual", "audio", "text")
# Dense bf16 / fp32 peaks (FLOP/s) of accelerators by `device_kind` prefix: NVIDIA spec sheets (SXM), Google docs.
PEAK_FLOPS = {"NVIDIA H200": {"bfloat16": 989e12, "float32": 67e12},
              "NVIDIA H100": {"bfloat16": 989e12, "float32": 67e12},
              "NVIDIA A100": {"bfloat16": 312e12, "float32": 19.5e12},
              "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
              "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 4},
              "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 4}}


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one utterance brings: face crops, voice patches, a token sequence."""

    frames: int = 4
    patches: int = 4
    seq_len: int = 64


@dataclasses.dataclass
class ModelSet:
    name: str
    towers: dict[str, tuple]          # modality → (config, task, module)
    face_shape: tuple[int, int, int]  # uint8 [h, w, c] per crop
    vocab_size: int
    describe: dict

    def with_dtype(self, dtype: str) -> "ModelSet":
        """The same fp32 weights in towers built to compute in `dtype` (`model.dtype`): each layer casts its inputs
        and weights itself, as in training."""
        from ml_collections import ConfigDict

        from emohd_jax.towers import make_tower

        towers = {}
        for modality, (config, _, module) in self.towers.items():
            config = ConfigDict(config.to_dict())
            config.model.dtype = dtype
            task = make_tower(config)
            graphdef, _ = nnx.split(nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0))))
            towers[modality] = (config, task, nnx.merge(graphdef, nnx.state(module)))
        return dataclasses.replace(self, towers=towers)


def paper_towers(workdir: pathlib.Path, *, small: bool = False) -> ModelSet:
    """Full-size towers with random weights (`small`: the same code at toy widths, for a dry run)."""
    from emohd_jax.run_config import load_config
    from emohd_jax.towers import make_tower

    text_dir = _random_distilbert(workdir / ("distilbert_small" if small else "distilbert"), small=small)
    configs = {
        "visual": ["fer_visual:mlp", "--config.model.backbone=resnet50", "--config.model.variant=torchvision",
                   "--config.model.init=", "--config.model.features=pooled", "--config.eval.flip=false",
                   "--config.eval.shift=0"],
        "audio": ["ravdess_audio", "--config.model.size=" + ("small" if small else "full"), "--config.model.width=1.0",
                  "--config.model.dropout=0.0", "--config.model.input_mean=0.0", "--config.model.input_std=1.0"],
        "text": ["meld_text:distilbert", f"--config.model.init={text_dir}", "--config.model.pretrained=true",
                 "--config.text.tokenizer=minilm"],
    }
    towers = {}
    for modality, spec in configs.items():
        config = load_config(["--config", *spec])
        task = make_tower(config)
        module = task.build_model(nnx.Rngs(0))
        if modality == "text":
            task.load_pretrained(module)  # the random DistilBERT PyTorch also loads: shared weights
        towers[modality] = (config, task, module)
    return ModelSet("paper", towers, (224, 224, 3), 30522, {
        "visual": "ResNet50 (torchvision layout) 224×224 → pooled 2048 → BatchNorm → MLP 256 → 7",
        "audio": f"VGGish {'small' if small else 'full'} 96×64 → FC 4096, 4096 → 7",
        "text": "DistilBERT-base (6 layers, 768, 12 heads) → CLS → MLP 256 → 7" + (" (small)" if small else "")})


def bundle_towers(bundle_dir: str | None = None) -> ModelSet:
    from emohd_jax.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    towers = {m: (t.config, t.task, t.module) for m, t in bundle.towers.items()}
    describe = {m: t.config.task + ": " + t.config.model.get("backbone", t.config.model.get("size", t.config.model.get(
        "init", ""))) for m, t in bundle.towers.items()}
    if bundle.towers["audio"].task.model_fields != ("patches",):
        # The fused function feeds 0.96 s patches; a voice tower on Whisper features is not in it yet: the small
        # VGGish (random weights, the same shapes as the previous bundle's) stands in, and the JSON says so.
        from emohd_jax.run_config import load_config
        from emohd_jax.towers import make_tower

        config = load_config(["--config", "ravdess_audio"])
        task = make_tower(config)
        towers["audio"] = (config, task, task.build_model(nnx.Rngs(0)))
        describe["audio"] = ("small VGGish stand-in (random weights): the shipped voice tower is "
                             f"{bundle.towers['audio'].config.task}, whose encoder is not in this fused function yet")
    face = (64, 64, 1) if bundle.towers["visual"].config.model.backbone == "mini_xception" else (224, 224, 3)
    encoder = bundle.towers["text"].module.encoder.config
    return ModelSet("bundle", towers, face, encoder.vocab_size, describe)


def _random_distilbert(folder: pathlib.Path, *, small: bool) -> pathlib.Path:
    """A DistilBERT-base with seeded random weights, in the Hugging Face layout both frameworks load."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    config = DistilBertConfig(n_layers=2, dim=64, hidden_dim=128, n_heads=4) if small else DistilBertConfig()
    DistilBertModel(config).save_pretrained(folder)
    return folder


# ---- the jitted path ----------------------------------------------------------------------------------------

def make_fused(model_set: ModelSet, fusion_params: fusion.FusionParams, workload: Workload):
    """(fused, states, tower_probs): fused(states, batch) → (decision [B], scores [B, class], probs [B, modality,
    class]); tower_probs(modality, state, fields) → [n, class], one tower alone (the per-stage timings).

    One pure function: each tower on its share of the batch, clip pooling (mean over an utterance's faces and
    patches), fusion. Jit it once; `batch` is donated by the caller's jit.
    """
    graphdefs, states = {}, {}
    for modality, (_, _, module) in model_set.towers.items():
        graphdefs[modality], states[modality] = nnx.split(module)
    tasks = {m: task for m, (_, task, _) in model_set.towers.items()}

    def tower_probs(modality: str, state, fields: dict) -> jax.Array:
        return tasks[modality].predict_probs(nnx.merge(graphdefs[modality], state), fields)

    def fused(states, batch):
        size = batch["input_ids"].shape[0]
        face = tower_probs("visual", states["visual"], {"face": batch["face"]})
        voice = tower_probs("audio", states["audio"], {"patches": batch["patches"]})
        words = tower_probs("text", states["text"], {"input_ids": batch["input_ids"],
                                                     "token_type_ids": batch["token_type_ids"]})
        probs = jnp.stack([face.reshape(size, workload.frames, -1).mean(1),
                           voice.reshape(size, workload.patches, -1).mean(1), words], axis=1)  # [B, modality, class]
        decision, scores = fusion.fuse_with(fusion_params, probs, jnp.ones(probs.shape[:2], bool))
        return decision, scores, probs

    return fused, states, tower_probs


def host_batch(model_set: ModelSet, workload: Workload, size: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs as the extractors hand them over: uint8 faces, float32 patches, int32 tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, model_set.vocab_size, (size, workload.seq_len), dtype=np.int32)
    ids[:, 0] = 101  # [CLS]
    return {"face": rng.integers(0, 256, (size * workload.frames, *model_set.face_shape), dtype=np.uint8),
            "patches": (rng.standard_normal((size * workload.patches, 96, 64)) - 2.0).astype(np.float32),
            "input_ids": ids, "token_type_ids": np.zeros_like(ids)}


def analytic_flops(model_set: ModelSet, workload: Workload) -> dict[str, int] | None:
    """Per-utterance FLOPs by tower, from the architectures (the paper set), or None."""
    from emohd_jax.models.resnet50 import flops_per_image
    from emohd_jax.models.vggish import flops_per_patch

    if model_set.name != "paper":
        return None
    _, _, visual = model_set.towers["visual"]
    head = visual.head
    mlp = 2 * (head.hidden.in_features * head.hidden.out_features + head.out.in_features * head.out.out_features)
    _, _, text = model_set.towers["text"]
    encoder = text.encoder.config
    text_head = 2 * (encoder.hidden_size * text.head_hidden.out_features + text.head_out.in_features * text.head_out.out_features)
    return {"visual": workload.frames * (flops_per_image(visual.backbone.config, head=False) + mlp),
            "audio": workload.patches * flops_per_patch(model_set.towers["audio"][1].vggish_config()),
            "text": encoder.flops_per_sequence(workload.seq_len, 1 if text.pooling == "cls" else None) + text_head}


def xla_flops(fn: Callable, *args) -> float:
    """XLA's own count for the compiled function (what the analytic count is checked against)."""
    cost = inference_jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def peak_flops(dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for the default device."""
    kind = jax.devices()[0].device_kind
    for prefix, peaks in PEAK_FLOPS.items():
        if kind.startswith(prefix):
            return peaks[dtype], f"spec sheet ({prefix}, dense {dtype})"
    n = 2048
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x: x @ x)
    best = time_call(lambda: matmul(a).block_until_ready(), repeats=5)["min_s"]
    return 2 * n ** 3 / best, f"measured: best of 5 {n}×{n} {dtype} matmuls on {kind}"


def time_jax(model_set: ModelSet, workload: Workload, fusion_params, size: int, repeats: int,
             profile_dir: pathlib.Path | None = None) -> dict:
    """Seconds per batch of the fused function (next batch prefetched), per stage, and its probabilities;
    `profile_dir`: one more call under `jax.profiler.trace` (open it with TensorBoard's profile plugin or Perfetto)."""
    fused, states, tower_probs = make_fused(model_set, fusion_params, workload)
    step = inference_jit(fused, donate_argnums=1)
    host = [host_batch(model_set, workload, size, seed) for seed in range(2)]
    compile_start = time.perf_counter()
    jax.block_until_ready(step(states, jax.device_put(host[0])))
    compile_s = time.perf_counter() - compile_start
    # Steady state with the next batch's transfer issued before the current result is awaited.
    times, pending = [], jax.device_put(host[1])
    for k in range(repeats):
        t0 = time.perf_counter()
        out = step(states, pending)
        pending = jax.device_put(host[k % 2])  # overlaps the computation just dispatched
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    batch = jax.device_put(host[0])
    stages = {}
    for modality, fields in (("visual", {"face": batch["face"]}), ("audio", {"patches": batch["patches"]}),
                             ("text", {k: batch[k] for k in ("input_ids", "token_type_ids")})):
        fn = inference_jit(lambda s, f, m=modality: tower_probs(m, s, f))
        stages[modality] = time_call(lambda: jax.block_until_ready(fn(states[modality], fields)),
                                     repeats=repeats)["median_s"]
    probs = jnp.ones((size, 3, 7), jnp.float32) / 7
    fuse_only = jax.jit(lambda p: fusion.fuse_with(fusion_params, p, jnp.ones(p.shape[:2], bool)))
    stages["fusion"] = time_call(lambda: jax.block_until_ready(fuse_only(probs)), repeats=repeats)["median_s"]
    out_probs = np.asarray(step(states, jax.device_put(host[0]))[2])
    if profile_dir is not None:
        with jax.profiler.trace(str(profile_dir)):
            jax.block_until_ready(step(states, jax.device_put(host[1])))
    return {"seconds": seconds, "utterances_per_s": size / seconds, "compile_s": compile_s,
            "stage_seconds": stages, "probs": out_probs}


# ---- PyTorch: the same paper workload ------------------------------------------------------------------------

def torch_paper_models(model_set: ModelSet):
    """PyTorch towers mirroring the paper set; weights copied from the JAX towers where a converter maps them."""
    import torch

    text_config, _, text = model_set.towers["text"]
    _, _, audio = model_set.towers["audio"]
    _, _, visual = model_set.towers["visual"]
    notes = {}
    try:
        import torchvision

        from emohd_jax.convert.resnet50 import resnet50_from_torch

        torch.manual_seed(0)
        resnet = torchvision.models.resnet50()
        source = resnet50_from_torch({k: v.numpy() for k, v in resnet.state_dict().items()}, "torchvision")
        source.fc = visual.backbone.fc
        nnx.update(visual.backbone, nnx.state(source))  # the JAX tower takes torchvision's random weights
        resnet.fc = torch.nn.Identity()
        notes["visual"] = "torchvision resnet50, its random weights converted into the JAX tower"
        notes["shared_weights"] = list(MODALITIES)
        face_trunk = lambda x: resnet(x)  # noqa: E731
    except ImportError as error:
        from transformers import ResNetConfig, ResNetModel

        resnet = ResNetModel(ResNetConfig())
        notes["visual"] = (f"transformers ResNetModel (ResNet-50 config), own random weights: torchvision does not "
                           f"import here ({type(error).__name__}), and no converter maps the JAX weights to it")
        face_trunk = lambda x: resnet(pixel_values=x).pooler_output.flatten(1)  # noqa: E731
        notes["shared_weights"] = ["audio", "text"]

    class Head(torch.nn.Module):
        def __init__(self, norm, hidden, out, activation):
            super().__init__()
            self.norm, self.hidden, self.out, self.activation = norm, hidden, out, activation

        def forward(self, x):
            return self.out(self.activation(self.hidden(self.norm(x) if self.norm is not None else x)))

    face_head = Head(_torch_batch_norm(visual.head.norm), _torch_linear(visual.head.hidden),
                     _torch_linear(visual.head.out), torch.relu)  # frozen_backbone.MLPHead

    vggish, notes["audio"] = _torch_vggish(audio)

    from transformers import DistilBertModel

    distilbert = DistilBertModel.from_pretrained(str(text_config.model.init))
    text_head = Head(None, _torch_linear(text.head_hidden), _torch_linear(text.head_out),
                     torch.nn.functional.gelu)  # text_encoder.TextClassifier: exact GELU
    notes["text"] = "transformers DistilBertModel on the same random checkpoint, head copied"

    models = [resnet, face_head, vggish, distilbert, text_head]
    for model in models:
        model.eval()

    def face(batch: dict):  # → [frames in the batch, class]
        faces = batch["face"].permute(0, 3, 1, 2).float() / 255.0
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        faces = (faces - mean.to(faces.device).view(1, 3, 1, 1)) / std.to(faces.device).view(1, 3, 1, 1)
        return torch.softmax(face_head(face_trunk(faces)), -1)

    def voice(batch: dict):  # → [patches in the batch, class]
        x = vggish.features(batch["patches"][:, None])
        return torch.softmax(vggish.embeddings(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)), -1)

    def words(batch: dict):  # → [utterances, class]
        hidden = distilbert(input_ids=batch["input_ids"], attention_mask=batch["input_ids"] != 0).last_hidden_state
        return torch.softmax(text_head(hidden[:, 0]), -1)

    return {"visual": face, "audio": voice, "text": words}, models, notes


def torch_fused(towers: dict[str, Callable], workload: Workload) -> Callable:
    """The three PyTorch towers and clip pooling → probs: [batch, modality, class], as `make_fused` does in JAX."""
    import torch

    def forward(batch: dict):
        size = batch["input_ids"].shape[0]
        return torch.stack([towers["visual"](batch).view(size, workload.frames, -1).mean(1),
                            towers["audio"](batch).view(size, workload.patches, -1).mean(1),
                            towers["text"](batch)], 1)

    return forward


def _torch_linear(linear: nnx.Linear):
    import torch

    layer = torch.nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(linear.kernel.value, np.float32).T.copy()))
        layer.bias.copy_(torch.from_numpy(np.array(linear.bias.value, np.float32)))
    return layer


def _torch_batch_norm(norm: nnx.BatchNorm):
    import torch

    layer = torch.nn.BatchNorm1d(norm.num_features, eps=norm.epsilon)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(norm.scale.value, np.float32)))
        layer.bias.copy_(torch.from_numpy(np.array(norm.bias.value, np.float32)))
        layer.running_mean.copy_(torch.from_numpy(np.array(norm.mean.value, np.float32)))
        layer.running_var.copy_(torch.from_numpy(np.array(norm.var.value, np.float32)))
    return layer


def _torch_vggish(classifier):
    """torchvggish's VGG (the full size; a mirror of the same layers at `--small` widths) with the JAX tower's
    weights, its 128-d layer replaced by the 7-way head as in the tower."""
    import torch

    from emohd_jax.models.vggish import VGGishConfig

    if classifier.vggish.config.conv_blocks == VGGishConfig().conv_blocks:
        import torchvggish

        vggish = torchvggish.torchvggish._vgg(postprocess=False)
        note = "torchvggish VGG, weights copied from the JAX tower, 128-d layer replaced by the 7-way head"
    else:
        layers, in_features = [], 1
        for i, conv in enumerate(classifier.vggish.conv):
            layers += [torch.nn.Conv2d(in_features, conv.out_features, 3, padding=1), torch.nn.ReLU()]
            layers += [torch.nn.MaxPool2d(2, 2)] if i in classifier.vggish.pool_after else []
            in_features = conv.out_features
        fcs = [torch.nn.Linear(fc.in_features, fc.out_features) for fc in classifier.vggish.fc]
        vggish = torch.nn.Module()
        vggish.features = torch.nn.Sequential(*layers)
        vggish.embeddings = torch.nn.Sequential(*(m for fc in fcs for m in (fc, torch.nn.ReLU())))
        note = "VGGish-shaped torch mirror at the --small widths, weights copied from the JAX tower"
    _copy_vggish(classifier, vggish)
    vggish.embeddings = torch.nn.Sequential(*list(vggish.embeddings)[:4], _torch_linear(classifier.head))
    return vggish, note


def _copy_vggish(classifier, vggish) -> None:
    """JAX VGGish trunk → the torch model's `features` convs and its two FC layers."""
    import torch

    convs = [m for m in vggish.features if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in vggish.embeddings if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for conv, jconv in zip(convs, classifier.vggish.conv):
            conv.weight.copy_(torch.from_numpy(np.array(jconv.kernel.value, np.float32).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.array(jconv.bias.value, np.float32)))
        for linear, jlinear in zip(linears, classifier.vggish.fc):
            linear.weight.copy_(torch.from_numpy(np.array(jlinear.kernel.value, np.float32).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.array(jlinear.bias.value, np.float32)))


def parity(row: dict) -> dict:
    """`measurement.speed_ratios` of a row, fused and per tower where both frameworks timed the towers:
    {"fp32" | "any_dtype": {"fused" | modality: JAX / best PyTorch}}."""
    timed = {k: v for k, v in row.items() if k.startswith(("jax_", "torch_")) and isinstance(v, dict) and "seconds" in v}
    ratios = {"fp32": {}, "any_dtype": {}}
    for part in ("fused", *MODALITIES):
        seconds = {k: v["seconds"] if part == "fused" else v.get("stage_seconds", {}).get(part) for k, v in timed.items()}
        for scope, ratio in speed_ratios(seconds).items():
            ratios[scope][part] = ratio
    return ratios


def time_torch(forward: Callable, batch_np: dict, repeats: int, *, compile_: bool, autocast: bool) -> dict:
    """Median seconds of `forward(batch)` (eager or torch.compile, optionally under bf16 autocast) and its output."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = {k: torch.from_numpy(v).to(device) for k, v in batch_np.items()}
    batch["input_ids"] = batch["input_ids"].long()
    run = torch.compile(forward) if compile_ else forward

    def call():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = run(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    t0 = time.perf_counter()
    probs = call()
    first_s = time.perf_counter() - t0
    seconds = time_call(call, warmup=0, repeats=repeats)["median_s"]
    size = batch_np["input_ids"].shape[0]
    return {"seconds": seconds, "utterances_per_s": size / seconds, "first_call_s": first_s,
            "probs": probs.float().cpu().numpy()}


# ---- the run --------------------------------------------------------------------------------------------------

def run(sets: list[str], batches: list[int], dtypes: list[str], *, repeats: int, small: bool, torch_ref: bool,
        workdir: pathlib.Path, out_dir: pathlib.Path, torch_modes: tuple[str, ...] = ("eager", "compile"),
        profile_dir: pathlib.Path | None = None, tower_times: bool = True) -> dict:
    """`tower_times`: time each PyTorch tower alone too (the per-tower ratios; one more compile per tower)."""
    from tqdm import tqdm

    from emohd_jax.bundle import load_bundle

    workload = Workload()
    fusion_params = load_bundle().fusion
    results = {"what": __doc__.split("\n\n")[1].strip(), "workload_per_utterance": dataclasses.asdict(workload),
               "load_average_1m": {"start": os.getloadavg()[0]}, "sets": {}}
    peaks = {dtype: peak_flops(dtype) for dtype in dtypes}
    results["peak_flops"] = {d: {"flops_per_s": p, "source": s} for d, (p, s) in peaks.items()}
    for set_name in sets:
        model_set = paper_towers(workdir, small=small) if set_name == "paper" else bundle_towers()
        torch_side = torch_paper_models(model_set) if (torch_ref and set_name == "paper") else None
        flops = analytic_flops(model_set, workload)
        per_utt = sum(flops.values()) if flops else _xla_flops_per_utterance(model_set, workload, fusion_params)
        entry = {"towers": model_set.describe, "flops_per_utterance": flops or {"xla_cost_analysis": per_utt},
                 "rows": []}
        if torch_side:
            entry["torch"] = torch_side[2]
        typed = {dtype: model_set.with_dtype(dtype) for dtype in dtypes}
        for size in tqdm(batches, desc=f"bench fused {set_name}", unit="batch size"):
            row = {"batch": size}
            for dtype in dtypes:
                trace = profile_dir / f"{set_name}_{dtype}_batch{size}" if profile_dir and size == batches[-1] else None
                measured = time_jax(typed[dtype], workload, fusion_params, size, repeats, trace)
                achieved = per_utt * measured["utterances_per_s"]
                row[f"jax_{dtype}"] = {k: v for k, v in measured.items() if k != "probs"} | {
                    "tflop_per_s": achieved / 1e12, "mfu": achieved / peaks[dtype][0]}
                row.setdefault("_probs", {})[f"jax_{dtype}"] = measured["probs"]
            if torch_side:
                towers_torch = torch_side[0]
                batch_np = host_batch(model_set, workload, size, 0)
                import torch

                for name, compile_, autocast in torch_variants(torch_modes, cuda=torch.cuda.is_available()):
                    try:
                        measured = time_torch(torch_fused(towers_torch, workload), batch_np, repeats,
                                              compile_=compile_, autocast=autocast)
                        if tower_times:
                            measured["stage_seconds"] = {m: time_torch(towers_torch[m], batch_np, repeats,
                                                                       compile_=compile_, autocast=autocast)["seconds"]
                                                         for m in MODALITIES}
                    except Exception as error:  # inductor needs a C++ toolchain; say so rather than abort
                        row[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                        continue
                    row[name] = {k: v for k, v in measured.items() if k != "probs"}
                    row["_probs"][name] = measured["probs"]
                row["jax_over_best_torch"] = parity(row)
                reference = row["_probs"].get("torch_eager_fp32")
                if reference is not None and "jax_float32" in row["_probs"]:
                    diff = np.abs(row["_probs"]["jax_float32"] - reference).max(axis=(0, 2))  # per modality
                    shared = torch_side[2]["shared_weights"]
                    row["max_abs_prob_diff_jax_fp32_vs_torch"] = {
                        m: float(d) if m in shared else "not compared: different weights" for m, d in zip(MODALITIES, diff)}
            row.pop("_probs")
            entry["rows"].append(row)
        results["sets"][set_name] = entry
    results["load_average_1m"]["end"] = os.getloadavg()[0]
    save("fused", results, out_dir)
    _plot(results, out_dir / "fused.png")
    return results


def _xla_flops_per_utterance(model_set: ModelSet, workload: Workload, fusion_params) -> float:
    fused, states, _ = make_fused(model_set, fusion_params, workload)
    batch = jax.tree.map(jnp.asarray, host_batch(model_set, workload, 1, 0))
    return xla_flops(fused, states, batch)


def _plot(results: dict, path: pathlib.Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sets = results["sets"]
    figure = Figure(figsize=(6 * len(sets), 4))
    FigureCanvasAgg(figure)
    for k, (name, entry) in enumerate(sets.items()):
        ax = figure.add_subplot(1, len(sets), k + 1)
        batches = [r["batch"] for r in entry["rows"]]
        keys = sorted({key for r in entry["rows"] for key, v in r.items() if isinstance(v, dict) and "utterances_per_s" in v})
        for key in keys:
            ax.plot(batches, [r.get(key, {}).get("utterances_per_s", np.nan) for r in entry["rows"]], "o-", label=key)
        ax.set(xscale="log", xlabel="batch (utterances)", ylabel="utterances / s", title=f"fused V+A+T: {name} set")
        ax.minorticks_off()
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench fused", description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="paper,bundle", help="model sets: paper, bundle")
    parser.add_argument("--batches", default="1,2,4", help="batch sizes in utterances (powers of two)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="toy widths of the same code: a dry run in seconds")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--workdir", default="work/bench", help="where the random DistilBERT checkpoint is kept")
    parser.add_argument("--out-dir", default="reports/bench")
    parser.add_argument("--profile", default=None, help="folder for a jax.profiler trace of the largest batch")
    parser.add_argument("--no-tower-times", action="store_true",
                        help="time the PyTorch towers only together (no per-tower ratios; fewer compiles)")
    args = parser.parse_args(argv)
    run(args.sets.split(","), [int(b) for b in args.batches.split(",")], args.dtypes.split(","),
        repeats=args.repeats, small=args.small, torch_ref=not args.no_torch, workdir=pathlib.Path(args.workdir),
        out_dir=pathlib.Path(args.out_dir), profile_dir=pathlib.Path(args.profile) if args.profile else None,
        tower_times=not args.no_tower_times)


if __name__ == "__main__":
    main()
