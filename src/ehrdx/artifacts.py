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
# What every refusal of a damaged or edited directory advises: its files are read as ehrdx wrote them.
RESTORE = ("use the model directory as ehrdx wrote it (its files are not edited by hand): copy the whole directory "
           "again from where it came from, or train again")


class EntryError(ValueError):
    """A family's loader about one entry of one file of the directory (e.g. config.json `thresholds`):
    load_model says it with the file's path and the fix."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file} {key}: {problem}")


def json_kind(value: object) -> str:
    """What a JSON value is, in an error: 'a list', 'text ("16")', 'null' ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, str):
        return f"text ({value[:40]!r})"
    if isinstance(value, int | float):
        return f"the number {value}"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else type(value).__name__


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
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: an existing file, where the model directory is to be written\n  fix: give a "
                         "directory path (it is created if needed)")
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


# Written beside a model by the command that saved it (ehrdx train, ehrdx update), so about the model saved
# before: a model saved over it another way (ehrdx pretrain, EHRClassifier.save) would be shown its metrics.
_ABOUT_THE_SAVED_MODEL = ("update_report.json", "metrics.json")


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
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable JSON file ({exc})\n  fix: {RESTORE}") from exc
    if not isinstance(value, dict):  # every file of a model directory is one JSON object
        raise ModelError(f"{path}: {json_kind(value)}, where a JSON object {{...}} is expected\n  fix: {RESTORE}")
    return value


def _check_format(path: Path, config: dict) -> None:
    version = config.get("format_version")
    if version == FORMAT_VERSION and not isinstance(version, bool):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelError(f"{path}: model format {version} (written by ehrdx "
                         f"{config.get('ehrdx_version', '(version not recorded)')}) is newer than this ehrdx "
                         f"{__version__} reads (format {FORMAT_VERSION})\n  fix: upgrade ehrdx (pip install "
                         "--upgrade ehrdx) to read it, or train the model again with this version")
    raise ModelError(f"{path}: format_version is {json_kind(version)}, not a model format this ehrdx reads "
                     f"({FORMAT_VERSION})\n  fix: {RESTORE}")


def _checksums(path: Path, config: dict) -> dict[str, str]:
    """config.json's `sha256`: the name of every other file of the directory and its SHA-256."""
    digests = config.get("sha256", {})
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ModelError(f"{path}: sha256 is {json_kind(digests)}, where each file's name and SHA-256 are expected "
                         f"({{\"model.safetensors\": \"<64 hex digits>\", ...}})\n  fix: {RESTORE}")
    for name in digests:
        if name in ("", ".", "..", "config.json") or Path(name).name != name:  # only files beside config.json
            raise ModelError(f"{path}: sha256 names {name!r}, which is not a file of the model directory\n"
                             f"  fix: {RESTORE}")
    return digests


def load_model(directory: str | Path):
    d = Path(directory)
    if d.exists() and not d.is_dir():
        fix = (f"give the folder it is in, {d.parent}" if (d.parent / "config.json").is_file() else
               "give the path of that folder")
        raise ModelError(f"{d}: this is a file, expected a model directory (the folder that ehrdx train or "
                         f"ehrdx update wrote, with config.json and model.safetensors)\n  fix: {fix}")
    if not d.is_dir():
        raise ModelError(f"{d}: model directory not found\n  fix: give the directory that ehrdx train or ehrdx update "
                         "wrote (their --out)")
    copy_all = "copy the whole model directory: every file config.json names under sha256"
    other = "give the directory that ehrdx train or ehrdx update wrote (config.json, model.safetensors ...)"
    if not (d / "config.json").exists():
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing config.json\n  fix: "
                         f"{copy_all if (d / 'model.safetensors').exists() else other}")
    config = _read_json(d / "config.json")
    _check_format(d / "config.json", config)
    family = config.get("family", "table")
    if not isinstance(family, str) or family not in FAMILIES:
        fix = ("this is a pretrained encoder (ehrdx pretrain wrote it): start a model from it with ehrdx train "
               "--init DIR, then give the model that train writes" if family == "encoder" else RESTORE)
        raise ModelError(f"{d / 'config.json'}: unknown model family {family!r} (known: "
                         f"{', '.join(sorted(FAMILIES)) or 'none registered'}; ehrdx.load registers them all)\n"
                         f"  fix: {fix}")
    required = FAMILIES[family].required
    missing = [name for name in required if not (d / name).exists()]
    if missing:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(missing)}\n  fix: {copy_all}")
    digests = _checksums(d / "config.json", config)
    for name in required:
        if name not in digests:
            raise ModelError(f"{d / 'config.json'}: no checksum recorded for {name}\n  fix: {RESTORE}")
    gone = [name for name in digests if not (d / name).exists()]
    if gone:
        raise ModelError(f"{d}: not a complete ehrdx model directory, missing {', '.join(gone)}\n  fix: {copy_all}")
    for name, digest in digests.items():
        if _sha256(d / name) != digest:
            raise ModelError(f"{d / name}: checksum does not match config.json (file changed or truncated)\n"
                             f"  fix: {RESTORE}")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{d / 'model.safetensors'}: not a readable safetensors file ({exc})\n  fix: {RESTORE}"
                         ) from exc
    files = {name: _read_json(d / name) for name in digests if name.endswith(".json")}
    try:
        return FAMILIES[family].loader(config, files, state)
    except EntryError as exc:  # an entry of the wrong kind: named, with the file
        raise ModelError(f"{d / exc.file}: {exc.key}: {exc.problem}\n  fix: {RESTORE}") from exc
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:  # weights that do not fit the config
        raise ModelError(f"{d}: the model files do not fit together ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:300]})\n  fix: {RESTORE}") from exc
