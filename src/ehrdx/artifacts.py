"""Model directories: config and vocabularies in JSON, weights in safetensors. Nothing is unpickled.

Every model kind describes itself as parts (JSON files, a tensor state, config entries); this module
writes them atomically (temporary name, then rename) with the SHA-256 of each file in config.json, and
verifies them all on load. `family` in config.json says which classifier reads them back: `table`
(one row per patient) or `events` (event streams).

This module knows no classifier: each family registers its files and its loader with `register_family`
when its module is imported (estimator.py: `table` and `events`), and `load_model` looks the
family up. `ehrdx.load` imports the classifiers first, so every family is registered by then.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

from ehrdx.errors import ModelError
from ehrdx.io import atomic_save_tensors, atomic_write_json
from ehrdx.version import __version__

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Family:
    """How one kind of model directory is read back: the files it must hold, and the loader that builds the
    classifier from (config.json, the other JSON files by name, the tensor state)."""

    required: tuple[str, ...]
    loader: Callable[[dict, dict[str, dict], dict], object]


FAMILIES: dict[str, Family] = {}


def register_family(family: str, required: tuple[str, ...], loader: Callable[[dict, dict[str, dict], dict], object]
                    ) -> None:
    """Make `load_model` read directories whose config.json says `family` (called by the classifier's module)."""
    FAMILIES[family] = Family(tuple(required), loader)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(clf, directory: str | Path) -> Path:
    parts = clf.artifact_parts()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_files(out, [*parts["json"], "model.safetensors"])
    # config.json last: until it is replaced, a directory that held an older model fails its checksums
    # (or lacks config.json) and does not load, so a crash mid-save never leaves a model that loads.
    for name, obj in parts["json"].items():
        atomic_write_json(out / name, obj)
    atomic_save_tensors(out / "model.safetensors", {k: v.detach().contiguous().cpu() for k, v in parts["state"].items()})
    files = [*parts["json"], "model.safetensors"]
    config = {
        "format_version": FORMAT_VERSION,
        "ehrdx_version": __version__,
        "family": parts["family"],
        **parts["config"],
        "sha256": {name: _sha256(out / name) for name in files},
    }
    atomic_write_json(out / "config.json", config)
    return out


# Written beside a model by the command that saved it (ehrdx update), so about the model saved before.
_ABOUT_THE_SAVED_MODEL = ("update_report.json",)


def _remove_stale_files(out: Path, files: list[str]) -> None:
    """A model saved over an older one: remove the older one's files that this one does not write (another
    model kind's gbm.json, an update's update_report.json), so that nothing in the directory describes the
    model that is gone (ehrdx report would show an old update's table as this model's)."""
    if not (out / "config.json").is_file():
        return
    try:
        old = json.loads((out / "config.json").read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError):
        old = {}
    for name in [*(old if isinstance(old, dict) else {}), *_ABOUT_THE_SAVED_MODEL]:
        if name not in files and "/" not in name and (out / name).is_file():
            (out / name).unlink()


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
    if family not in FAMILIES:
        raise ModelError(f"{d / 'config.json'}: unknown model family {family!r} (known: "
                         f"{', '.join(sorted(FAMILIES)) or 'none registered'}; ehrdx.load registers them all)")
    required = FAMILIES[family].required
    missing = [name for name in required if not (d / name).exists()]
    if missing:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(missing)}")
    digests = config.get("sha256", {})
    for name in required:
        if name not in digests:
            raise ModelError(f"{d / 'config.json'}: no checksum recorded for {name}")
    gone = [name for name in digests if not (d / name).exists()]
    if gone:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(gone)}")
    for name, digest in digests.items():
        if _sha256(d / name) != digest:
            raise ModelError(f"{d / name}: checksum does not match config.json (file changed or truncated)")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{d / 'model.safetensors'}: not a readable safetensors file ({exc})") from exc
    files = {name: _read_json(d / name) for name in digests if name.endswith(".json")}
    try:
        return FAMILIES[family].loader(config, files, state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # weights that do not fit the config
        raise ModelError(f"{d}: the model files do not fit together ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})") from exc
