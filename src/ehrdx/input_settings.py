"""The settings that shape an event model's input, saved with the model and reused by every command.

`ehrdx train` records how it read the events (the visit gap, the events-table column mapping, the OMOP code
choice, the MEDS split-name mapping, the data cut `--until`, the split fractions) in the model directory
as `input.json`. `predict`, `evaluate`, `report`, `explain` and `update` read the data the same way by
default; an option given on the command line wins, and a value that differs from the model's is printed as
a note. `--until` is the exception: it says where the training data stopped, so it is reported but not
reapplied to the data a later command reads (that data is usually newer, by design). Models saved before
`input.json` existed load as before and use the built-in defaults. A model fitted from Python records the visit
gap of its store (`with_visit_gap`), and a store split otherwise is warned of when it predicts.
"""

from __future__ import annotations

import json
from pathlib import Path

from ehrdx.artifacts import EntryError, json_kind
from ehrdx.data.meds import MEDS_SPLITS
from ehrdx.errors import DataError, EhrdxError
from ehrdx.tasks.task import duration_text, parse_duration

INPUT_FILE = "input.json"
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
# Settings reused from the model when not given (the built-in default where the model has none).
REUSED = {"visit_gap": "0", "subject_col": "subject_id", "time_col": "time", "code_col": "code",
          "value_col": "numeric_value", "time_format": None, "split_names": {}, "omop_codes": "source",
          "omop_prefix": None}
OPTION = {"visit_gap": "--visit-gap", "subject_col": "--subject-col", "time_col": "--time-col",
          "code_col": "--code-col", "value_col": "--value-col", "time_format": "--time-format",
          "split_names": "--split-names", "omop_codes": "--omop-codes", "omop_prefix": "--omop-prefix",
          "until": "--until"}
COLUMNS = ("subject_col", "time_col", "code_col", "value_col", "time_format")


def parse_split_names(text: str | None) -> dict[str, str]:
    """'test=held_out,val=tuning' -> {'test': 'held_out', 'val': 'tuning'}; every target a MEDS split."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, sep, target = (x.strip() for x in part.partition("="))
        if not sep or not name or target not in MEDS_SPLITS:
            raise EhrdxError(f"--split-names: cannot read '{part}': write NAME=SPLIT pairs separated by commas, "
                             f"SPLIT one of {', '.join(MEDS_SPLITS)} (e.g. test=held_out,val=tuning)")
        out[name] = target
    return out


def format_split_names(mapping: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def read_input_settings(model_dir: str | Path) -> dict:
    """The model's saved input settings ({} for models saved without them). The file's checksum is
    verified when the model itself is loaded."""
    path = Path(model_dir) / INPUT_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # loading the model reports the damaged file
    return saved if isinstance(saved, dict) else {}


def check_saved(saved: dict) -> None:
    """Raise EntryError on an input.json entry that ehrdx did not write so: every command reads the data with
    these settings, and an odd one surfaced as an error about a command-line option never given."""
    for key, value in saved.items():
        if key == "split_names":
            ok = isinstance(value, dict) and all(isinstance(v, str) and v in MEDS_SPLITS for v in value.values())
            expected = f"an object of split names, each mapped to one of {', '.join(MEDS_SPLITS)}"
        elif key == "split_fractions":
            ok = (isinstance(value, list) and len(value) == 3 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1 for v in value)
                and abs(sum(value) - 1) < 1e-6)
            expected = "three shares (train, validation, test) that add up to 1"
        elif key == "visit_gap":
            try:
                ok = isinstance(value, str) and parse_duration(value) >= 0
            except DataError:
                ok = False
            expected = "a duration such as 0, 6h or 1d"
        elif key in REUSED or key in ("until", "source"):
            ok, expected = value is None or isinstance(value, str), "text"
        else:
            continue  # not read
        if not ok:
            raise EntryError(INPUT_FILE, key, f"{json_kind(value)}, where {expected} is expected")


def resolve(saved: dict, given: dict) -> tuple[dict, list[str]]:
    """The settings to read the data with, and notes for the user. `given` holds command-line values,
    None where the option was not given."""
    out: dict = {}
    notes: list[str] = []
    for key, default in REUSED.items():
        value = given.get(key)
        if key == "split_names" and value is not None:
            value = parse_split_names(value) if isinstance(value, str) else dict(value)
        if value is None:
            out[key] = saved.get(key, default)
        else:
            out[key] = value
            if key in saved and value != saved[key]:
                notes.append(f"{OPTION[key]} {_show(key, value)} given: the model was trained with "
                             f"{_show(key, saved[key])}; using {_show(key, value)}")
    out["until"] = given.get("until")
    if saved.get("until"):
        if out["until"] is None:
            notes.append(f"the model was trained on events up to {saved['until']} (--until); this run reads all "
                         "events (give --until to cut the data the same way)")
        elif out["until"] != saved["until"]:
            notes.append(f"--until {out['until']} given: the model was trained on events up to {saved['until']}")
    out["split_fractions"] = tuple(saved.get("split_fractions", DEFAULT_FRACTIONS))
    return out, notes


def _show(key: str, value) -> str:
    if key == "split_names":
        return format_split_names(value) or "(none)"
    return "(ISO 8601)" if value is None and key == "time_format" else str(value)


def settings_to_save(given: dict, fractions: tuple[float, float, float], source: str) -> dict:
    """input.json of a model trained with these command-line values."""
    out = {key: given.get(key, default) for key, default in REUSED.items()}
    if isinstance(out["split_names"], str) or out["split_names"] is None:
        out["split_names"] = parse_split_names(out["split_names"])
    out["until"] = given.get("until")
    out["split_fractions"] = [float(f) for f in fractions]
    out["source"] = source
    return out


def with_visit_gap(saved: dict | None, seconds: int) -> dict:
    """The input settings of a model fitted on a store whose visits are split at `seconds`: the command's, with
    the gap as the store has it (a Python fit records nothing else), so that every later use reads the same."""
    out = dict(saved or {})
    if out.get("visit_gap") is None or parse_duration(out["visit_gap"]) != seconds:
        out["visit_gap"] = duration_text(seconds)
    return out


def visit_gap_differs(saved: dict | None, seconds: int) -> str | None:
    """What to say when a store's visits are split at another gap than the model's (its input settings), else
    None (also for a model saved before it kept its gap): the visits it reads are not those it learned from, and
    a next-visit task predicts at other times."""
    gap = (saved or {}).get("visit_gap")
    if gap is None or parse_duration(gap) == seconds:
        return None
    trained = parse_duration(gap)
    return (f"the store's visits are split at a gap of {seconds:,} s ({duration_text(seconds)}), the model's at "
            f"{trained:,} s ({gap}): it reads other visits than it learned from, and a next-visit task predicts at "
            f"other times\n  fix: open the store with open_store(..., visit_gap_seconds={trained}) (ehrdx "
            f"commands read it with the model's --visit-gap {gap} unless given another)")


def columns_of(settings: dict) -> dict:
    return {k: settings[k] for k in COLUMNS}
