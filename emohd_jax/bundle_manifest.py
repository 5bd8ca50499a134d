"""A bundle's manifest (`bundle.json`) read, checked and fingerprinted, and its files verified, without building
a model: what `emohd predict` needs to key its results and skip finished inputs before anything heavy (JAX,
the towers) is imported. `emohd_jax.bundle` loads and exports whole bundles on top of it.
"""

from __future__ import annotations

import hashlib
import json

from etils import epath

from emohd_jax.classes import EMOTIONS
from emohd_jax.errors import CheckpointLayoutError, CorruptBundleError

SCHEMA = "emohd.bundle/1"
MANIFEST = "bundle.json"
DEFAULT_BUNDLE = epath.Path(__file__).parent / "assets" / "bundle"


def manifest_digest(manifest: dict) -> str:
    """sha256 of a bundle's manifest, which records each of its files' sha256: the bundle's identity."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


REPAIR = "export the bundle again with `emohd export`, or reinstall the package for the shipped one"


def read_manifest(root: epath.Path) -> dict:
    """`<root>/bundle.json` parsed and checked (schema, class order, the entries the loader reads)."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{root}: not a model bundle (no {MANIFEST}; write one with `emohd export`)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:  # a truncated file ends mid-value
        raise CorruptBundleError(manifest_path, f"not valid JSON ({err}): truncated or edited; {REPAIR}") from err
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        schema = manifest.get("schema") if isinstance(manifest, dict) else None
        raise CheckpointLayoutError(manifest_path, f"schema {schema!r}, this version reads {SCHEMA}")
    missing = [key for key in ("classes", "modalities", "towers", "fusion") if key not in manifest]
    missing += [f"towers.{m}.{key}" for m, entry in manifest.get("towers", {}).items()
                for key in ("config", "weights") if key not in entry]
    if missing:
        raise CorruptBundleError(manifest_path, f"no {', '.join(missing)} entry; {REPAIR}")
    if tuple(manifest["classes"]) != EMOTIONS:
        raise CheckpointLayoutError(manifest_path, f"class order {manifest['classes']} differs from {list(EMOTIONS)}")
    return manifest


def verified_files(root: epath.Path, entry: dict) -> dict[str, bytes]:
    """A tower's weights and shipped files (name → bytes), each of the size and sha256 its manifest entry records
    (`emohd export` records both); CorruptBundleError naming the first that differs."""
    recorded = [(entry["weights"], entry.get("bytes"), entry.get("sha256")),
                *((f["name"], f.get("bytes"), f["sha256"]) for f in entry.get("files", {}).values())]
    data = {}
    for name, size, sha256 in recorded:
        path = root / name
        data[name] = path.read_bytes()
        if size is not None and len(data[name]) != size:
            raise CorruptBundleError(path, f"{len(data[name]):,} bytes, the manifest records {size:,}: truncated or "
                                           f"replaced; {REPAIR}")
        if sha256 is not None and hashlib.sha256(data[name]).hexdigest() != sha256:
            raise CorruptBundleError(path, f"sha256 differs from the manifest's: the file was changed or damaged; "
                                           f"{REPAIR}")
    return data
