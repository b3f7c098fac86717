"""Model directories: config and vocabularies in JSON, weights in safetensors. Nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from ehrdx.errors import ModelError

FORMAT_VERSION = 1
FILES = ("config.json", "preprocessing.json", "labels.json", "model.safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))
    os.replace(tmp, path)


def save_model(clf, directory: str | Path) -> Path:
    import ehrdx

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "preprocessing.json", clf.preprocessor_.to_dict())
    _write_json(out / "labels.json", clf.label_vocab_.to_dict())
    state = {k: v.detach().contiguous().cpu() for k, v in clf.model_.state_dict().items()}
    tmp = out / "model.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, out / "model.safetensors")
    config = {
        "format_version": FORMAT_VERSION,
        "ehrdx_version": ehrdx.__version__,
        "model": clf.model_.config.to_dict(),
        "train": clf.train_config.to_dict(),
        "thresholds": [float(t) for t in clf.thresholds_],
        "history": clf.history_.to_dict() if hasattr(clf, "history_") else None,
        "sha256": {name: _sha256(out / name) for name in FILES if name != "config.json"},
    }
    _write_json(out / "config.json", config)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({exc})") from exc


def load_model(directory: str | Path):
    from ehrdx.api import EHRClassifier

    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"{d}: model directory not found")
    missing = [name for name in FILES if not (d / name).exists()]
    if missing:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(missing)}")
    config = _read_json(d / "config.json")
    if config.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{d / 'config.json'}: unsupported model format {config.get('format_version')!r}")
    for name, digest in config.get("sha256", {}).items():
        if _sha256(d / name) != digest:
            raise ModelError(f"{d / name}: checksum does not match config.json (file changed or truncated)")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{d / 'model.safetensors'}: not a readable safetensors file ({exc})") from exc
    train = dict(config["train"])
    model_cfg = {k: v for k, v in config["model"].items() if k not in ("kind", "n_dense", "n_codes", "n_labels")}
    clf = EHRClassifier(**model_cfg, **train)
    clf._restore(config["model"], _read_json(d / "preprocessing.json"), _read_json(d / "labels.json"),
                 config["thresholds"], state)
    return clf
