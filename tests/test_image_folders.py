"""Class-folder adapter, and evaluation of a held-out set whose folder names differ (no code change)."""

import io
import json
import pathlib
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest

from emohd_jax.extract import Utterance
from data_pipeline.sources.image_folders import parse_label_map, read_class_folders
from emohd_jax.classes import CLASS_INDEX
from emohd_jax.errors import UnknownLabelError, UsageError

from tests.data_paths import DATA


@pytest.fixture(scope="module")
def fer_root() -> pathlib.Path:
    path = DATA / "fer2013"
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (see ../shared/data/README.md)")
    return path


def copy_faces(src: pathlib.Path, dst: pathlib.Path, folders: dict[str, str], per_class: int = 2) -> None:
    """dst/<new name>/ gets the first `per_class` images of src/<FER2013 name>/."""
    for fer_name, new_name in folders.items():
        (dst / new_name).mkdir(parents=True)
        for image in sorted((src / fer_name).glob("*.jpg"))[:per_class]:
            shutil.copy(image, dst / new_name / image.name)


def test_fer2013_val_counts(fer_root):
    utterances, skips = read_class_folders(fer_root, "val")
    assert len(utterances) == 3589 and len(skips) == 0
    counts = np.bincount([u.label for u in utterances], minlength=7)
    assert counts[CLASS_INDEX["happiness"]] == 895 and counts[CLASS_INDEX["disgust"]] == 56
    first = utterances[0]
    assert first.uid == "fer2013/val/angry/" + pathlib.Path(first.image).stem and first.split == "val"


def test_unknown_folder_is_skipped_or_raised(tmp_path, fer_root):
    copy_faces(fer_root / "val", tmp_path / "test", {"happy": "happy", "sad": "contempt"})
    utterances, skips = read_class_folders(tmp_path, "test")
    assert [u.label for u in utterances] == [CLASS_INDEX["happiness"]] * 2
    assert skips.counts() == {"unknown_label": 1} and "contempt" in skips.skips[0].reason
    with pytest.raises(UnknownLabelError, match="unknown label 'contempt'"):
        read_class_folders(tmp_path, "test", strict=True)
    with pytest.raises(UsageError, match=r"/train: no such split folder \(expected .*; splits here: test\)$"):
        read_class_folders(tmp_path, "train")
    with pytest.raises(UsageError, match="fer2013: no such image folder"):
        read_class_folders(tmp_path / "fer2013", "test")


def test_label_map_from_spec_and_json(tmp_path):
    assert parse_label_map("Joy=happiness, calm=") == {"joy": "happiness", "calm": None}
    (tmp_path / "map.json").write_text(json.dumps({"Mad": "anger"}))
    assert parse_label_map(str(tmp_path / "map.json")) == {"mad": "anger"}
    with pytest.raises(UsageError, match=r"^config.data.label_map: targets \['glee'\] are not classes \(one of"):
        parse_label_map("joy=glee")
    with pytest.raises(UsageError, match="'joy' is not a label map"):
        parse_label_map("joy")


def test_held_out_set_with_other_names_evaluates_by_command(tmp_path, fer_root):
    """`emohd eval` on a class-folder set with its own folder names, scoring the converted model as shipped."""
    from emohd_jax import cli

    folders = {"happy": "Joy", "surprise": "Surprised", "angry": "Mad", "neutral": "calm"}
    copy_faces(fer_root / "val", tmp_path / "cife" / "test", folders, per_class=3)
    assert cli.dispatch(["eval", "--config", "fer_visual", "--config.checkpoint=pretrained",
              f"--config.data.root={tmp_path}", "--config.data.dataset=cife", "--config.data.split=test",
              "--config.data.label_map=joy=happiness,surprised=surprise,mad=anger,calm=",
              f"--config.data.shards={tmp_path / 'shards'}", f"--config.report_dir={tmp_path / 'report'}",
              "--config.eval.batch_size=8"]) == 0
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["dataset"] == "cife" and report["n"] == 9 and report["checkpoint"] == "pretrained"
    assert report["per_class"]["happiness"]["support"] == 3 and report["per_class"]["neutral"]["support"] == 0
    assert (tmp_path / "report" / "confusion.png").is_file()


def _png_claiming(path: pathlib.Path, width: int, height: int) -> None:
    """A 32×32 PNG whose header claims width×height: only a reader that trusts the header and stops there is safe."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (32, 32)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR checksum over type + data
    path.write_bytes(bytes(data))


def test_bad_images_are_skipped_with_their_reason_and_the_batch_goes_on(tmp_path, fer_root):
    """0-byte and non-image .jpg, a 1×1 image, headers claiming 48, 100 and 900 megapixels (refused from the header,
    never decoded, without PIL's decompression-bomb warning); a 4000×4000 face is resized and kept."""
    from PIL import Image

    from emohd_jax.vision.extract import ImageExtractor
    from data_pipeline.prepare import extract_split
    from data_pipeline.record_cache import cache_path, load_records

    folder = tmp_path / "happy"
    folder.mkdir()
    good = next((fer_root / "val" / "happy").glob("*.jpg"))
    shutil.copy(good, folder / "good.jpg")
    Image.open(good).resize((4000, 4000)).save(folder / "large.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image")
    Image.new("L", (1, 1)).save(folder / "dot.jpg")
    for name, side in (("huge.png", (4000, 12000)), ("bomb.png", (10000, 10000)), ("bigger.png", (30000, 30000))):
        _png_claiming(folder / name, *side)
    utterances = [Utterance(uid=p.name, dataset="fer2013", split="val", label=1, text=None, image=str(p))
                  for p in sorted(folder.iterdir())]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        extract_split(utterances, ImageExtractor("mini_xception"), tmp_path / "cache")
    outcome = {u.uid: load_records(cache_path(tmp_path / "cache", u.uid)) for u in utterances}
    assert [(len(outcome[name][0]), outcome[name][1]) for name in ("good.jpg", "large.jpg")] == [(1, None)] * 2
    skips = {uid: skip for uid, (_, skip) in outcome.items() if skip}
    assert {uid: s["kind"] for uid, s in skips.items()} == {
        "empty.jpg": "corrupt_media", "notes.jpg": "corrupt_media", "dot.jpg": "image_too_small",
        "huge.png": "image_too_large", "bomb.png": "image_too_large", "bigger.png": "image_too_large"}
    assert skips["dot.jpg"]["reason"].endswith("dot.jpg: too small to hold a face (1×1; the detector's smallest "
                                               "face is 20 px)")
    assert "4000×12000 (48 megapixels) is over the 40-megapixel limit" in skips["huge.png"]["reason"]
    assert "10000×10000 (100 megapixels) is over the 40-megapixel limit" in skips["bomb.png"]["reason"]
    assert "more than 179 megapixels, over the 40-megapixel limit" in skips["bigger.png"]["reason"]
