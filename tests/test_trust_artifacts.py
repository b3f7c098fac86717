"""Trust, saved models: a model directory copied short, edited by hand or pointed at the wrong place ends in one
error naming the file, the entry and the fix (exit 2 on the command line), and no command writes over a
directory it reads. Uses the golden fixtures read-only: what a test changes is a copy in tmp_path."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

import ehrdx
from cli_run import GOLDEN, run
from ehrdx.errors import ModelError


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under `path`: what 'unchanged' means."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def assert_clean_error(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    for needle in needles:
        assert needle in r.output, (needle, r.output)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> dict:
    """The golden MEDS dataset and a small encoder pretrained on it (ehrdx pretrain)."""
    out = tmp_path_factory.mktemp("encoder")
    shutil.copytree(GOLDEN / "meds", out / "meds")
    r = run("pretrain", "--meds", out / "meds", "--out", out / "enc", "--hidden", 8, "--epochs", 1)
    assert r.exit_code == 0, r.output
    return {"meds": out / "meds", "enc": out / "enc"}


# --- The encoder a model starts from is an input: never written over ----------------------------------------
@pytest.mark.parametrize("where", ["enc", "enc/model"])
def test_train_refuses_an_output_over_or_inside_its_init_encoder(encoder, where):
    before = digest(encoder["enc"])
    r = run("train", "--meds", encoder["meds"], "--model", "gru", "--init", encoder["enc"], "--epochs", 1,
            "--out", encoder["enc"].parent / where)
    assert_clean_error(r, "the input pretrained encoder (--init)")
    assert digest(encoder["enc"]) == before


def test_update_refuses_an_output_over_the_encoder_its_model_started_from(encoder, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(GOLDEN / "gru_model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "pretrained": {"directory": str(encoder["enc"])}}))
    before = digest(encoder["enc"])
    r = run("update", "--meds", encoder["meds"], "--model", model, "--out", encoder["enc"])
    assert_clean_error(r, "the input pretrained encoder of --model")
    assert digest(encoder["enc"]) == before


def test_a_model_is_not_saved_over_the_encoder_it_started_from(encoder):
    clf = ehrdx.load(GOLDEN / "gru_model")
    clf.pretrained_ = {"directory": str(encoder["enc"])}
    before = digest(encoder["enc"])
    with pytest.raises(ModelError, match="the pretrained encoder the model started from"):
        clf.save(encoder["enc"])
    assert digest(encoder["enc"]) == before
