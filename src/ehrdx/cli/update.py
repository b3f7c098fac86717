"""ehrdx update: add labels to a trained event model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ehrdx.cli.app import app
from ehrdx.cli.event_data import EventData, reads_events
from ehrdx.cli.inputs import (
    open_events,
    require_events_model,
)
from ehrdx.cli.options import (
    Device,
    EpochProgress,
    GlobalOptions,
    InferIntroduced,
    Lr,
    Precision,
    Seed,
    SplitNames,
    check_out,
    console,
    fail,
    given_options,
    split_list,
)
from ehrdx.errors import DataError, EhrdxError
from ehrdx.paths import label_map_path


@app.command()
@reads_events()
def update(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="The trained event model to grow (never modified).")],
    out: Annotated[Path, typer.Option(help="Directory for the updated model.")],
    add: Annotated[str | None, typer.Option(help="Comma-separated labels to add (default: every label in the "
                                            "new data's training patients that the model lacks); LABEL=DATE "
                                            "also gives the date the label was introduced, e.g. "
                                            "U07.1=2020-03-01.")] = None,
    labels: Annotated[str | None, typer.Option(help="A new label selection (e.g. a map with new conditions of "
                                               "interest); it must still select every old label.")] = None,
    init: Annotated[str, typer.Option(help="How new label rows start: probe (logistic regression on the frozen "
                                      "model's states, its L2 penalty C chosen per label on the validation "
                                      "patients), auto, parent, code, description, mean.")] = "probe",
    protect: Annotated[str, typer.Option(help="Against forgetting old labels: distill or none.")] = "distill",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs after the new rows start (0: rows only).")] = 2,
    lr: Lr = 1e-3,
    replay_meds: Annotated[Path | None, typer.Option(help="Old training data (MEDS) to replay during fine-tuning; "
                                                     "its train split is used, new labels unknown there.")] = None,
    replay_until: Annotated[str | None, typer.Option(help="Use the replay data only up to this date.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also fine-tune without protection and retrain "
                                          "from scratch on the same data, and report all three.")] = False,
    infer_introduced: InferIntroduced = False,
    split_names: SplitNames = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    *,
    event_data: EventData,
) -> None:
    """Add labels to a trained event model without retraining from scratch: append them to the
    vocabulary (old labels keep their place), grow the head, fine-tune on the new data while distilling
    the old model's predictions on old labels, and report each label before and after."""
    meds, store = event_data.meds, event_data.store
    opts: GlobalOptions = ctx.obj
    check_out(out, {**event_data.paths(model), "replay data (--replay-meds)": replay_meds,
                     "label map (--labels)": label_map_path(labels),
                     "pretrained encoder of --model": _encoder_of(model)}, kind="dir")
    import ehrdx
    from ehrdx.evaluate.report import few_positive_labels
    from ehrdx.events_pipeline import open_store, patient_splits
    from ehrdx.input_settings import columns_of, settings_to_save
    from ehrdx.tasks.select import LabelSelector
    from ehrdx.tasks.task import parse_duration
    from ehrdx.update import below_retraining, check_update, compare_update, fine_tuned, update_model

    try:  # the options, and what the model alone can say of them, are checked before the data is read
        add_labels, introduced = labels_to_add(add)
        old = ehrdx.load(model)
        require_events_model(old, model, "update")
        selector = LabelSelector.parse(labels) if labels else None
        add_labels = check_update(old, new_labels=add_labels, selector=selector, init=init, protect=protect,
                                  replay=replay_meds is not None, introduced=introduced)
    except EhrdxError as exc:
        fail(exc)
    unused = given_options(ctx, ("init", "protect", "epochs", "lr"))
    if unused and not fine_tuned(old):  # these shape a network's fine-tuning, which this model does not have
        console.print(f"[yellow]{', '.join(unused)} not used: the {escape(old.model_name_)} model is not fine-tuned; "
                      "its new labels are fitted (auto's network member by a probe on its frozen states) and its old "
                      "labels' outputs kept as they are[/yellow]")

    settings, events = event_data.resolve(model, split_names)
    try:
        st = open_events(meds, events, store, settings["visit_gap"], columns_of(settings), settings["until"])
        splits = patient_splits(st, meds, seed, settings["split_fractions"], old.selector_,
                                split_names=settings["split_names"], rule=old.split_rule_)
        replay = None
        if replay_meds is not None:
            old_st = open_store(meds=replay_meds, until=replay_until,
                                visit_gap_seconds=parse_duration(settings["visit_gap"]))
            replay = (old_st, patient_splits(old_st, replay_meds, seed, selector=old.selector_,
                                             split_names=settings["split_names"], rule=old.split_rule_)[0])
        progress = EpochProgress(epochs, "fine-tuning")  # shown once the labels to add are checked
        try:
            new, report = update_model(old, st, splits, new_labels=add_labels, selector=selector, init=init,
                                       protect=protect, epochs=epochs, lr=lr, parent_dir=model, on_epoch=progress,
                                       replay=replay, device=device, precision=precision, introduced=introduced,
                                       infer_introduced=infer_introduced, on_start=progress.start)
        finally:
            progress.stop()
        # the updated model reads its data as this run read the new data
        new.input_ = settings_to_save(settings, settings["split_fractions"], event_data.kind)
        new.save(out)
        if compare:
            report["compare"] = compare_update(old, st, splits, report, selector, add_labels, introduced, init,
                                               epochs, lr, infer_introduced, stage=console.status)
            report["new_labels_below_retraining"] = below_retraining(opts.release(report))
        report["new_labels_few_positives"] = few_positive_labels(opts.release(report))
        opts.write_json(out / "update_report.json", report)
    except (EhrdxError, ValueError) as exc:
        fail(exc)
    print_update(opts.release(report))
    console.print(escape(f"updated model saved to {out} (report: {out / 'update_report.json'}); {model} is unchanged"))


def labels_to_add(add: str | None) -> tuple[list[str] | None, dict[str, str]]:
    """`--add A,B=2020-03-01`: the labels (None: all new ones) and the introduction dates given, each date
    checked (an error naming the option)."""
    from ehrdx.update import introduction_date

    labels, dates = [], {}
    for item in split_list(add):
        label, sep, date = item.partition("=")
        if not label.strip():
            raise DataError(f"{item!r} has no label before '='", column="--add",
                            fix="write LABEL or LABEL=DATE, e.g. U07.1=2020-03-01")
        labels.append(label.strip())
        if sep:
            introduction_date(date)
            dates[label.strip()] = date.strip()
    return labels or None, dates


def init_text(report: dict, label: str) -> str:
    """How a label's row started, with the probe's penalty where one was chosen (e.g. `probe (C 0.01)`)."""
    c = report.get("probe_c", {}).get(label)
    return report["init"].get(label, "") + (f" (C {c:g})" if c is not None else "")


def print_update(report: dict) -> None:
    from rich.table import Table
    from rich.text import Text

    from ehrdx.evaluate.report import count_lines
    from ehrdx.evaluate.report import format_value as _fmt
    from ehrdx.tasks.scan import LABEL_CODE_NOTES

    t = Table(title=f"Update: added {escape(', '.join(report['added']))} in {report['seconds']}s "
                    f"({report['epochs']} epochs, protection: {report['protect']})")
    for col in ("label", "description", "new", "introduced_at", "parent", "train pos patients", "train pos",
                "test pos", "AUROC before", "AUROC after", "AUPRC before", "AUPRC after", "init"):
        t.add_column(col, justify="left" if col in ("label", "description", "introduced_at", "parent", "init")
                     else "right")
    for r in report["per_label"]:
        t.add_row(escape(r["label"]), Text(r.get("description") or ""), "yes" if r["new"] else "",
                  (r["introduced_at"] or "")[:10], escape(r["parent"] or ""),
                  str(r.get("train_positive_patients", "")), str(r["train_positives"]), str(r["test_positives"]),
                  _fmt(r["auroc_before"]), _fmt(r["auroc_after"]), _fmt(r["auprc_before"]), _fmt(r["auprc_after"]),
                  init_text(report, r["label"]))
    console.print(t)
    console.print(f"old labels macro AUROC {_fmt(report['old_labels_macro_auroc_before'])} -> "
                  f"{_fmt(report['old_labels_macro_auroc_after'])}; new labels macro AUROC "
                  f"{_fmt(report['new_labels_macro_auroc'])}")
    if "ensemble" in report:  # auto: how the new labels mix its members
        from ehrdx.evaluate.report import ensemble_line

        console.print(escape(ensemble_line(report["ensemble"])))
    for part in ("train", "test"):
        for line in count_lines(report.get(f"{part}_excluded", {}), part=part):
            console.print(f"[yellow]{escape(line)}[/yellow]")
    for key in LABEL_CODE_NOTES:
        if report.get(key):
            console.print(f"[yellow]{escape(report[key]['note'])}[/yellow]")
    if "compare" in report:
        c = Table(title="Compared on the same patients")
        for col in ("way", "seconds", "old labels macro AUROC", "new labels macro AUROC"):
            c.add_column(col, justify="left" if col == "way" else "right")
        c.add_row("old model", "", _fmt(report["old_labels_macro_auroc_before"]), "")
        for way, r in report["compare"].items():
            c.add_row(way, _fmt(float(r["seconds"])), _fmt(r["old_labels_macro_auroc_after"]),
                      _fmt(r["new_labels_macro_auroc"]))
        console.print(c)
    for w in report.get("new_labels_few_positives", []):
        console.print(f"[yellow]new label {escape(w['label'])}: {w['train_positive_patients']} positive training "
                      f"patients ({w['train_positives']} prediction times), fewer than {w['minimum']} (the few-shot "
                      "benchmark's minimum, MIN_TRAIN_POSITIVE_PATIENTS): its test AUROC and AUPRC are not to be "
                      "trusted; see their intervals in ehrdx report, or add patients with the label[/yellow]")
    for w in report.get("new_labels_below_retraining", []):
        console.print(f"[yellow]new label {escape(w['label'])}: AUROC {_fmt(w['auroc_update'])} after the update, "
                      f"{_fmt(w['auroc_retrain'])} retrained from scratch ({w['difference']:+.3f}; "
                      f"{w['train_positives']:,} training positives): for this label, retraining is better[/yellow]")


def _encoder_of(model: Path) -> Path | None:
    """The encoder directory the model started from (ehrdx train --init): update reads it again, so it is an
    input too. None when there is none or config.json cannot say (loading the model says what is wrong)."""
    try:
        info = json.loads((model / "config.json").read_text()).get("pretrained")
    except (OSError, ValueError, AttributeError):
        return None
    where = info.get("directory") if isinstance(info, dict) else None
    return Path(where) if isinstance(where, str) else None
