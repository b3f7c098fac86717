"""A pretrained encoder (ehrdx pretrain) as a directory, and what a fine-tune takes from it.

The encoder directory has the integrity of a model directory (ehrdx.artifacts: JSON and safetensors written
atomically, the SHA-256 of every file in config.json, checked on load, nothing unpickled):
  config.json          family `encoder`, the model's kind and sizes (`model`, `model_name`), the split and
                       training settings, the history, the ehrdx version, checksums
  model.safetensors    the whole pretraining network: its body and its next-visit output rows (the head)
  preprocessing.json   the input code vocabulary and value statistics (a fine-tune reads its inputs with it,
                       so the embeddings line up)
  targets.json         the target codes (then the time-to-next-visit targets), with their training patients
  patients.json        blake2b (8 bytes, hex, sorted) of the pretraining patients' ids: `train` (trained on)
                       and `tuning` (stopped early on); a fine-tune refuses to validate or test on them

`ehrdx train --init DIR` (EHRClassifier(init=DIR, hidden=None)) builds its model with the encoder's vocabulary
and sizes (a size given must agree), copies the body, keeps the output rows with the model (for `ehrdx update`)
and starts each label's head row from the output rows of the codes that define it (their mean; a label with
no pretrained code keeps the default start), then trains the label head, with the body (full fine-tune) or
without it (`probe`). The model reads the visits as the encoder did: its `context` (ehrdx pretrain --context)
must be given again (ehrdx train takes it from the encoder; another one is refused). `fit` refuses validation
patients the encoder was trained on; `ehrdx train` also refuses test patients it was trained or tuned on
(`check_pretrained_patients`, for a library run's own test rows).

`--model auto` with `--init` (EHRClassifier(model="auto", init=DIR)): the ensemble's network member is the
encoder's model (gru or transformer) with its sizes, started as above (`EncoderStart`; `probe` freezes that
member's body); every member reads the encoder's input vocabulary (the boosters' history features map codes
by name through it, so codes outside it count as unknown), and `ehrdx update` starts that member's probe of a
new label from the pretrained rows of its codes (`EnsembleModel.add_labels`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ehrdx.artifacts import FAMILIES, load_model, register_family, save_model
from ehrdx.data.sequences import EventEncoder
from ehrdx.errors import DataError, ModelError
from ehrdx.models.registry import SEQUENCE, get_model
from ehrdx.train.ensemble import ENSEMBLE, NETWORK_MEMBER

FAMILY = "encoder"
FILES = ("preprocessing.json", "targets.json", "patients.json", "model.safetensors")
PATIENT_HASH = "blake2b-8"
SIZES = ("hidden", "layers", "heads")  # what must agree between an encoder and the model it initialises


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file (None when it is not there): which encoder a model came from."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def patient_hashes(subject_ids) -> list[str]:
    """blake2b (8 bytes, hex) of each patient id, sorted: which patients, without their ids."""
    return sorted(hashlib.blake2b(str(int(s)).encode(), digest_size=8).hexdigest() for s in subject_ids)


@dataclass
class PretrainedEncoder:
    model_name: str  # gru | lstm | transformer
    model_config: dict  # SequenceConfig.to_dict() of the pretraining network (n_labels = len(targets))
    state: dict[str, torch.Tensor]
    input_encoder: EventEncoder
    targets: list[str]  # target codes, then the time targets
    target_patients: list[int]  # training patients with each target code (time targets: samples)
    n_time_targets: int
    patients: dict[str, list[str]]  # train, tuning: patient_hashes
    settings: dict = field(default_factory=dict)  # split and training settings, as given
    history: dict | None = None
    directory: Path | None = None  # where it was read from

    # -- the directory ---------------------------------------------------------------------------------
    def artifact_parts(self) -> dict:
        return {"family": FAMILY, "state": self.state,
                "json": {"preprocessing.json": self.input_encoder.to_dict(),
                         "targets.json": {"targets": self.targets, "training_patients": self.target_patients,
                                          "time_targets": self.n_time_targets},
                         "patients.json": {"hash": PATIENT_HASH, **self.patients}},
                "config": {"model": self.model_config, "model_name": self.model_name, "settings": self.settings,
                           "history": self.history, "targets": len(self.targets)}}

    def save(self, directory: str | Path) -> Path:
        return save_model(self, directory)

    @classmethod
    def from_parts(cls, config: dict, files: dict[str, dict], state: dict) -> PretrainedEncoder:
        targets = files["targets.json"]
        patients = {k: list(v) for k, v in files["patients.json"].items() if k != "hash"}
        return cls(config["model_name"], config["model"], dict(state), EventEncoder.from_dict(files["preprocessing.json"]),
                   list(targets["targets"]), list(targets["training_patients"]), int(targets["time_targets"]),
                   patients, dict(config.get("settings") or {}), config.get("history"))

    # -- what a fine-tune reads --------------------------------------------------------------------------
    @property
    def sizes(self) -> dict[str, int]:
        return {k: int(self.model_config[k]) for k in SIZES}

    @property
    def head_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next-visit output rows [T, H] and biases [T] (one per target)."""
        return self.state["head.label_embedding"], self.state["head.label_bias"]

    @property
    def context(self) -> int | None:
        """The visits a sequence read in pretraining (ehrdx pretrain --context; None: whole histories)."""
        value = self.settings.get("context")
        return None if value is None else int(value)

    @property
    def where(self) -> str:
        return str(self.directory) if self.directory is not None else "the encoder"


def load_encoder(directory: str | Path) -> PretrainedEncoder:
    """Read an encoder directory, checking every file's checksum (ehrdx.artifacts.load_model)."""
    d = Path(directory)
    config_path = d / "config.json"
    if not d.is_dir():  # load_model's own fix would point at ehrdx train's output, not pretrain's
        what = "a file, not an encoder directory" if d.exists() else "encoder directory not found"
        raise DataError(what, file=str(d), fix="give --init the directory that ehrdx pretrain wrote (its --out)")
    if config_path.is_file():
        try:
            family = json.loads(config_path.read_text()).get("family")
        except (OSError, json.JSONDecodeError, AttributeError):
            family = FAMILY  # load_model says what is wrong with it
        if family != FAMILY:
            raise DataError(f"this is a model directory (family {family!r}), not a pretrained encoder",
                            file=str(config_path), fix="give --init the directory that ehrdx pretrain wrote")
    # The family is known only while an encoder is read: `ehrdx.load` (predict, evaluate ...) refuses it.
    register_family(FAMILY, FILES, PretrainedEncoder.from_parts)
    try:
        encoder = load_model(d)
    finally:
        FAMILIES.pop(FAMILY, None)
    encoder.directory = d
    return encoder


# -- a fine-tune from an encoder (the estimator's fit) ---------------------------------------------------
def settings_from_encoder(clf, kind: str):
    """For `clf.fit` with `init`: read the encoder, check that the model asked for is the encoder's (model
    None: the encoder's) or `auto` (whose network member is then the encoder's model, NETWORK_MEMBER in the
    settings), set the derived `model_name_` and `layers_`, and return (encoder, the model's registry entry,
    the settings to build with: the encoder's sizes)."""
    if clf.init is None:
        raise ModelError("probe trains a linear head on a pretrained encoder's frozen states, and no encoder is "
                         "given\n  fix: give init=ENCODER_DIR (--init), or leave probe out")
    enc = load_encoder(clf.init)
    config = Path(enc.where) / "config.json"
    if kind != "events":
        raise DataError("a pretrained encoder reads event streams; this is a patient table", file=str(config),
                        fix="give --meds, --events or --omop, or leave --init out")
    auto = clf.model == ENSEMBLE  # the ensemble: its network member is the encoder's model
    if clf.model is not None and clf.model != enc.model_name and not auto:
        raise DataError(f"the encoder is a {enc.model_name} and the model asked for is a {clf.model}",
                        file=str(config), fix=f"give --model {enc.model_name} or --model {ENSEMBLE} (or leave "
                        f"--model out), or pretrain a {clf.model} encoder (ehrdx pretrain --model {clf.model})")
    if get_model(enc.model_name, kind).inputs_for(kind) != SEQUENCE:
        raise DataError(f"the encoder's model {enc.model_name} does not read sequences", file=str(config),
                        fix="pretrain a gru, lstm or transformer encoder")
    clf.model_name_ = ENSEMBLE if auto else enc.model_name
    spec = get_model(clf.model_name_, kind)
    asked = {"hidden": clf.hidden, "layers": clf.layers, "heads": clf.heads}
    if enc.model_name != "transformer":
        asked.pop("heads")  # a recurrent model has no heads
    wrong = {k: v for k, v in asked.items() if v is not None and v != enc.sizes[k]}
    if wrong:
        raise DataError("the model's sizes disagree with the encoder's: " + ", ".join(
            f"{k} {v} (encoder {enc.sizes[k]})" for k, v in wrong.items()), file=str(config),
            fix="leave " + ", ".join(f"--{k}" for k in wrong) + " out to take the encoder's sizes (Python: "
            + ", ".join(f"{k}=None" for k in wrong) + "), or pretrain with the sizes wanted")
    if clf.context != enc.context:  # other windows, or a prior summary the encoder never learned (or lacks)
        reads = {None: "whole histories"}
        fix = (f"leave --context out (ehrdx train takes the encoder's; Python: context={enc.context})"
               if enc.context is not None else
               f"leave --context out (context=None), or pretrain with ehrdx pretrain --context {clf.context}")
        raise DataError(f"the encoder was pretrained reading {reads.get(enc.context, f'context {enc.context}')} "
                        f"and this model would read {reads.get(clf.context, f'context {clf.context}')}",
                        file=str(config), fix=fix)
    clf.layers_ = enc.sizes["layers"]
    return enc, spec, {**enc.sizes, **({NETWORK_MEMBER: enc.model_name} if auto else {})}


def initialise_from_encoder(model, enc: PretrainedEncoder, label_codes: list[list[str]] | None = None) -> int:
    """Copy the encoder's body into `model` (built with its vocabulary and sizes), keep its output rows, and
    start each label's head row from them (`label_codes`: per label, in head order, the codes that define it):
    the mean of its codes' rows (`pretrained_start`, as ehrdx update starts a new label). A label none of whose
    codes was a pretraining target keeps the default start. The biases are left to the fit (each label's
    prevalence: a next-visit code's rate is not the label's). Returns how many labels started from the encoder."""
    body = {k: v for k, v in enc.state.items() if not k.startswith(("head.", "pretrained_"))}
    own = model.body_state()
    missing = sorted(k for k in body if k not in own)
    mismatched = sorted(k for k in body if k in own and tuple(own[k].shape) != tuple(body[k].shape))
    if missing or mismatched:
        raise DataError(f"the encoder's weights do not fit this model ({', '.join((missing + mismatched)[:5])}): "
                        "it was pretrained on other inputs or sizes", file=str(Path(enc.where) / "model.safetensors"),
                        fix="pretrain on the same data with the sizes of this model")
    model.load_state_dict(body, strict=False)
    model.keep_pretrained_rows(enc.targets, *enc.head_rows)
    if not label_codes:
        return 0
    rows, _, found = model.pretrained_start(label_codes)
    weight = model.head.label_embedding  # a model just built has one block: every label's row
    with torch.no_grad():
        weight[found] = rows[found].to(weight.device, weight.dtype)
    return int(found.sum())


class EncoderStart:
    """How a fit from an encoder starts its network: called with the network just built (the model itself, or
    auto's network member when the ensemble builds it, `EnsembleModel.start_network`), it copies the body and
    starts the label rows (`initialise_from_encoder`) and returns the context to train it in (`frozen_body`
    for a probe). `labels_started`: how many labels started from the encoder's rows."""

    def __init__(self, enc: PretrainedEncoder, label_codes: list[list[str]], probe: bool) -> None:
        self.enc, self.label_codes, self.probe = enc, label_codes, probe
        self.labels_started = 0

    def __call__(self, network) -> contextlib.AbstractContextManager:
        self.labels_started = initialise_from_encoder(network, self.enc, self.label_codes)
        return frozen_body(network, self.probe)


@contextlib.contextmanager
def frozen_body(model, frozen: bool):
    """Train the label head only (`frozen`): the body's parameters take no gradient for the duration (AdamW
    skips them, weight decay included); they train again afterwards (e.g. in ehrdx update)."""
    if not frozen:
        yield
        return
    params = model.body_parameters()
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def check_model_patients(clf, subject_ids: dict[str, np.ndarray]) -> None:
    """check_pretrained_patients for a model that came from an encoder (`clf.pretrained_`, e.g. before
    `ehrdx update` evaluates it on a new split): its encoder directory is read again (the model keeps its
    path and config digest, not the patients). An encoder that is gone or was changed since is refused:
    the split could not be checked."""
    info = getattr(clf, "pretrained_", None)
    if not info:
        return
    where = Path(info["directory"])
    config = where / "config.json"
    if not config.exists() or file_sha256(config) != info.get("config_sha256"):
        # models saved before the path was made absolute: it is read from the directory ehrdx runs in
        relative = "" if where.is_absolute() else (", from the directory ehrdx train ran in: run this command "
                                                   "there")
        raise DataError("this model came from a pretrained encoder that is no longer there as it was, so its "
                        "pretraining patients cannot be kept out of this run's validation and test patients",
                        file=str(config), fix="put the encoder directory back where it was when the model was "
                        f"trained (its path is in the model's config.json, `pretrained`{relative})")
    check_pretrained_patients(load_encoder(where), subject_ids)


def check_pretrained_patients(enc: PretrainedEncoder, subject_ids: dict[str, np.ndarray]) -> None:
    """Refuse to validate or test on the encoder's pretraining patients: `subject_ids` by part (validation,
    test); a validation patient may have been one of its tuning patients (they only stopped pretraining
    early), a test patient neither."""
    train, tuning = set(enc.patients.get("train", [])), set(enc.patients.get("tuning", []))
    for part, ids in subject_ids.items():
        hashes = patient_hashes(ids)
        seen = train if part == "validation" else train | tuning
        n = sum(h in seen for h in hashes)
        if n:
            raise DataError(f"{n:,} of this run's {len(hashes):,} {part} patients were pretraining patients of "
                            f"the encoder: its scores would be optimistic",
                            file=str(Path(enc.where) / "patients.json"),
                            fix="pretrain with the same split settings as this run (--seed, --val-fraction, "
                            "--test-fraction, --labels, or the MEDS subject_splits) so that they stay out of "
                            "pretraining, or split this run so that they are training patients")
