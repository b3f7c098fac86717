"""Model directories: config and vocabularies in JSON, weights in safetensors. Nothing is unpickled.

Every model kind describes itself as parts (JSON files, a tensor state, config entries); this module
writes them atomically (temporary name, then rename) with the SHA-256 of each file in config.json, and
verifies them all on load. `family` in config.json says which classifier reads them back: `table`
(one row per patient) or `events` (event streams).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file

from ehrdx.errors import ModelError
from ehrdx.io import atomic_save_tensors, atomic_write_json

FORMAT_VERSION = 1
REQUIRED = {"table": ("preprocessing.json", "labels.json", "model.safetensors"),
            "events": ("preprocessing.json", "labels.json", "task.json", "model.safetensors")}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(clf, directory: str | Path) -> Path:
    import ehrdx

    parts = clf.artifact_parts()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # config.json last: until it is replaced, a directory that held an older model fails its checksums
    # (or lacks config.json) and does not load, so a crash mid-save never leaves a model that loads.
    for name, obj in parts["json"].items():
        atomic_write_json(out / name, obj)
    atomic_save_tensors(out / "model.safetensors", {k: v.detach().contiguous().cpu() for k, v in parts["state"].items()})
    files = [*parts["json"], "model.safetensors"]
    config = {
        "format_version": FORMAT_VERSION,
        "ehrdx_version": ehrdx.__version__,
        "family": parts["family"],
        **parts["config"],
        "sha256": {name: _sha256(out / name) for name in files},
    }
    atomic_write_json(out / "config.json", config)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({exc})") from exc


def load_model(directory: str | Path):
    d = Path(directory)
    if d.exists() and not d.is_dir():
        fix = (f"give the folder it is in, {d.parent}" if (d.parent / "config.json").is_file() else
               "give the path of that folder")
        raise ModelError(f"{d}: this is a file, expected a model directory (the folder that ehrdx train or "
                         f"ehrdx update wrote, with config.json and model.safetensors)\n  fix: {fix}")
    if not d.is_dir():
        raise ModelError(f"{d}: model directory not found")
    if not (d / "config.json").exists():
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing config.json")
    config = _read_json(d / "config.json")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{d / 'config.json'}: unsupported model format {config.get('format_version')!r}")
    family = config.get("family", "table")
    if family not in REQUIRED:
        raise ModelError(f"{d / 'config.json'}: unknown model family {family!r}")
    missing = [name for name in REQUIRED[family] if not (d / name).exists()]
    if missing:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(missing)}")
    digests = config.get("sha256", {})
    for name in REQUIRED[family]:
        if name not in digests:
            raise ModelError(f"{d / 'config.json'}: no checksum recorded for {name}")
    for name, digest in digests.items():
        if not (d / name).exists() or _sha256(d / name) != digest:
            raise ModelError(f"{d / name}: checksum does not match config.json (file changed or truncated)")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{d / 'model.safetensors'}: not a readable safetensors file ({exc})") from exc
    files = {name: _read_json(d / name) for name in digests if name.endswith(".json")}
    try:
        if family == "events":
            from ehrdx.events_api import EventClassifier

            return EventClassifier.from_parts(config, files, state)
        from ehrdx.api import EHRClassifier

        return EHRClassifier.from_parts(config, files, state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # weights that do not fit the config
        raise ModelError(f"{d}: the model files do not fit together ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})") from exc
