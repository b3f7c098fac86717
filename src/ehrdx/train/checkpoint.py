"""Per-epoch training checkpoints, so a killed run continues where it stopped.

After every epoch (its validation and early-stopping decision included) the directory gets:
- `checkpoint.safetensors`: the model's weights, the best epoch's weights, the optimiser's tensors
  (AdamW moments and step counts), and the random states (torch's global generator, which drives
  dropout, and the generator that shuffles each epoch's data order);
- `checkpoint.json`: the epoch, best validation score, epochs without improvement, the history so
  far, the optimiser's hyper-parameters, and a fingerprint of the run (configs and training data),
  with the SHA-256 of the tensor file.
Both are written atomically, tensors first; the JSON names the tensor file's digest, so a pair from
two different epochs is refused. Nothing is pickled. On the CPU a resumed run takes exactly the steps
the uninterrupted run would have taken and ends with the same weights.

A model that fits itself in one go (gbm, logistic) has no epochs: `FittedCheckpoint` keeps it once fitted, in
the registry's own saved form (config and JSON files, for gbm LightGBM's model text; tensors, if any, in a
safetensors file), so a resumed run reads it instead of fitting it again. The `auto` ensemble gives each member
a subfolder of the run's checkpoint directory (`gbm/`, `gru/`) and keeps its own settings beside them.

`run.json` keeps the options of the command that started the run (`start_run`), so that a resume with other
options is refused (`check_run_options`) before the data is read; the fingerprints above still check the data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_tensors

from ehrdx.data.bits import label_tables, row_blocks
from ehrdx.errors import ModelError
from ehrdx.io import atomic_save_tensors, atomic_write_json

CHECKPOINT_VERSION = 1
TENSORS, META = "checkpoint.safetensors", "checkpoint.json"
RUN = "run.json"  # the options of the command that started the run
FITTED = "fitted"  # FittedCheckpoint's file names: fitted.json (and fitted.safetensors)


def data_fingerprint(train, val) -> str:
    """SHA-256 over what the run trains on: targets, masks and sizes of the training and validation sets."""
    h = hashlib.sha256()
    for part in (train, val):
        if part is None:
            h.update(b"none")
            continue
        # The bytes of the dense float32 targets and bool mask, a block of rows at a time (the same digest
        # as hashing the whole arrays: SHA-256 reads a stream), so packed targets are never made dense whole.
        y, mask = label_tables(part)
        for table, dtype in ((y, np.float32), (mask, bool)):
            for r in row_blocks(*np.shape(table)):
                h.update(np.ascontiguousarray(table[r], dtype=dtype).tobytes())
        h.update(str((len(part), getattr(part, "n_units", len(part)))).encode())
    return h.hexdigest()


class Checkpointer:
    def __init__(self, directory: str | Path, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return (self.directory / META).exists()

    def clear(self) -> None:
        for name in (META, TENSORS):
            (self.directory / name).unlink(missing_ok=True)

    def save(self, *, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, best_state: dict | None,
             best_val: float, stale: int, stopped: bool, history, generator: torch.Generator) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        if best_state is not None:
            tensors |= {f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()}
        opt = optimizer.state_dict()
        for idx, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.shuffle"] = generator.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = state
        atomic_save_tensors(self.directory / TENSORS, tensors)
        digest = hashlib.sha256((self.directory / TENSORS).read_bytes()).hexdigest()
        meta = {"checkpoint_version": CHECKPOINT_VERSION, "epoch": epoch, "best_val": best_val, "stale": stale,
                "stopped": stopped, "has_best": best_state is not None, "history": asdict(history),
                "param_groups": opt["param_groups"], "fingerprint": self.fingerprint, "sha256": digest}
        meta = json.loads(json.dumps(meta))  # as read back (tuples become lists, integer keys text)
        atomic_write_json(self.directory / META, {**meta, "meta_sha256": _meta_digest(meta)})

    def load(self) -> tuple[dict, dict[str, torch.Tensor]]:
        meta_path, tensor_path = self.directory / META, self.directory / TENSORS
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: unreadable checkpoint ({exc}); remove it to start afresh") from exc
        # checkpoints of versions before meta_sha256 have none: read as they were
        if not isinstance(meta, dict) or meta.get("meta_sha256", _meta_digest(meta)) != _meta_digest(meta):
            raise ModelError(f"{meta_path}: changed since ehrdx wrote it (an edit by hand), so the run cannot be "
                             f"resumed from it\n  fix: remove {self.directory} to train from the start")
        if meta.get("checkpoint_version") != CHECKPOINT_VERSION:
            raise ModelError(f"{meta_path}: checkpoint format {meta.get('checkpoint_version')!r} is not supported")
        try:
            raw = tensor_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{tensor_path}: missing checkpoint tensors ({exc})") from exc
        if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
            raise ModelError(f"{tensor_path}: does not match {meta_path} (changed or from another epoch); "
                             "remove the checkpoint to start afresh")
        check_fingerprint(meta_path, meta["fingerprint"], self.fingerprint)
        return meta, load_tensors(raw)

    @staticmethod
    def restore(meta: dict, tensors: dict[str, torch.Tensor], model: torch.nn.Module,
                optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict | None:
        """Put the saved state back; returns the best epoch's weights (or None)."""
        device = next(model.parameters()).device
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")} if meta["has_best"] else None
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.shuffle"])
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        return best


def check_fingerprint(path: Path, saved: dict, expected: dict) -> None:
    """Refuse a checkpoint whose run (settings, data) is not this one, naming what differs."""
    diff = sorted(k for k in {*saved, *expected} if saved.get(k) != expected.get(k))
    if diff:
        raise ModelError(f"{path}: the checkpoint is from a different run ({', '.join(diff)} differ); "
                         "resume with the same data and options, or remove the checkpoint to start afresh")


def _given(value) -> str:
    """An option's value as the command line has it: one left out (None, JSON null) is 'left out', not 'None'."""
    return "left out" if value is None else repr(value)


def _as_json(options: dict) -> dict:
    return json.loads(json.dumps(options, default=str))


def check_run_options(directory: str | Path, options: dict,
                      value_of: Callable[[str, object], object] | None = None) -> bool:
    """Whether a checkpoint is in `directory` to resume; refuse it (ModelError) when the run that made it had
    other `options` (option -> value, as `start_run` keeps them), naming each with both values. `value_of(option,
    value)` gives what a value stands for, so that one spelled otherwise (a visit gap 0 and 0s) is the same.
    Cheap: it reads one JSON file, so a command checks it before reading its data. A checkpoint without run.json
    (an older version's) is left to the fingerprints."""
    directory = Path(directory)
    path = directory / RUN
    if not path.exists():
        return directory.is_dir() and any(directory.iterdir())
    try:
        saved = json.loads(path.read_text())["options"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable checkpoint ({type(exc).__name__}); remove {directory} to start "
                         "afresh") from exc
    now = _as_json(options)
    same = value_of or (lambda option, value: value)
    diff = [k for k in sorted({*saved, *now}) if same(k, saved.get(k)) != same(k, now.get(k))]
    if diff:
        said = ", ".join(f"{k} {_given(saved.get(k))} there, {_given(now.get(k))} now" for k in diff)
        raise ModelError(f"{directory}: the checkpoint is from a run with other options ({said})\n  fix: resume "
                         "with the options it was started with, or leave out --resume to start afresh (the "
                         "checkpoint is replaced)")
    return True


def start_run(directory: str | Path, options: dict) -> None:
    """A fresh run: any older checkpoint in `directory` is removed (it must not be resumed later by mistake)
    and the run's `options` are kept in run.json."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / RUN, {"checkpoint_version": CHECKPOINT_VERSION, "options": _as_json(options)})


def _meta_digest(meta: object) -> str | None:
    """SHA-256 of checkpoint.json's entries but its own digest (None for what is not a JSON object)."""
    if not isinstance(meta, dict):
        return None
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _digest(config: dict, files: dict) -> str:
    return hashlib.sha256(json.dumps({"config": config, "files": files}, sort_keys=True).encode()).hexdigest()


class FittedCheckpoint:
    """A fitted model that fits itself (no epochs), as the registry saves it: `NAME.json` (fingerprint, config,
    JSON files, the digests of both parts) and `NAME.safetensors` where it has tensors. Written atomically,
    tensors first, once the model is fitted; read back only by a run with the same fingerprint."""

    def __init__(self, directory: str | Path, fingerprint: dict, name: str = FITTED) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.meta, self.tensors = self.directory / f"{name}.json", self.directory / f"{name}.safetensors"

    def exists(self) -> bool:
        return self.meta.exists()

    def clear(self) -> None:
        self.meta.unlink(missing_ok=True)
        self.tensors.unlink(missing_ok=True)

    def save(self, config: dict, tensors: dict[str, torch.Tensor], files: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        digest = None
        if tensors:
            atomic_save_tensors(self.tensors, {k: v.detach().cpu().contiguous() for k, v in tensors.items()})
            digest = hashlib.sha256(self.tensors.read_bytes()).hexdigest()
        atomic_write_json(self.meta, {"checkpoint_version": CHECKPOINT_VERSION, "fingerprint": self.fingerprint,
                                      "config": config, "files": files, "sha256": _digest(config, files),
                                      "tensors_sha256": digest})

    def load(self) -> tuple[dict, dict[str, torch.Tensor], dict]:
        """(config, tensors, files) as the registry's `load` takes them; refused if damaged or of another run."""
        try:
            meta = json.loads(self.meta.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{self.meta}: unreadable checkpoint ({exc}); remove it to start afresh") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), dict):  # an edit by hand
            raise ModelError(f"{self.meta}: changed since ehrdx wrote it (an edit by hand), so the run cannot be "
                             f"resumed from it\n  fix: remove {self.directory} to train from the start")
        if meta.get("checkpoint_version") != CHECKPOINT_VERSION:
            raise ModelError(f"{self.meta}: checkpoint format {meta.get('checkpoint_version')!r} is not supported")
        if _digest(meta.get("config"), meta.get("files")) != meta.get("sha256"):
            raise ModelError(f"{self.meta}: its model does not match its digest (changed or damaged); remove the "
                             "checkpoint to start afresh")
        check_fingerprint(self.meta, meta["fingerprint"], self.fingerprint)
        tensors: dict[str, torch.Tensor] = {}
        if meta.get("tensors_sha256") is not None:
            try:
                raw = self.tensors.read_bytes()
            except OSError as exc:
                raise ModelError(f"{self.tensors}: missing checkpoint tensors ({exc})") from exc
            if hashlib.sha256(raw).hexdigest() != meta["tensors_sha256"]:
                raise ModelError(f"{self.tensors}: does not match {self.meta}; remove the checkpoint to start afresh")
            tensors = load_tensors(raw)
        return meta["config"], tensors, meta["files"]
