"""The estimator's numeric settings checked before `fit` uses them: the command line's options have these bounds
(typer's min/max); from Python a value out of range reached torch or numpy as an error about tensors, or was
replaced by the default without a word (batch_size 0)."""

from __future__ import annotations

import numbers

from ehrdx.errors import ModelError

# setting -> (least value, whole number, None allowed: "init" = only with a pretrained encoder, whose size it takes)
BOUNDS: dict[str, tuple[float, bool, bool | str]] = {
    "hidden": (1, True, "init"), "heads": (1, True, "init"), "layers": (1, True, True), "batch_size": (1, True, True),
    "max_epochs": (0, True, False), "patience": (0, True, True), "min_steps": (0, True, False),
    "min_code_count": (0, True, False), "seed": (0, True, False), "code_dim": (0, True, False),
    "lr": (0, False, False), "weight_decay": (0, False, False),
}
SHARES = {"dropout": (0.0, 1.0, True), "val_fraction": (0.0, 1.0, False)}  # (low, high, high allowed)


def _problem(value, least: float, whole: bool) -> str | None:
    """What is wrong with a value, or None."""
    kind = numbers.Integral if whole else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        return f"a {'whole number' if whole else 'number'} of at least {least}"
    return None if value >= least else f"at least {least}"


def check_settings(params: dict, init: object = None, epochs: bool = False) -> None:
    """Raise ModelError naming every numeric setting of `params` (get_params()) out of range, and the range.
    `epochs`: the model learns epoch by epoch (a network), so that max_epochs 0 would leave it as it started
    (random weights) unless a pretrained encoder (`init`) starts it or min_steps asks for steps."""
    bad = []
    if epochs and init is None and params.get("max_epochs") == 0 and not params.get("min_steps"):
        bad.append(f"max_epochs=0 (at least 1 for the {params.get('model') or 'default'} model, which learns epoch "
                   "by epoch: with none its network would keep its random start weights, untrained; 0 only with "
                   "init, a pretrained encoder, or min_steps)")
    for name, (least, whole, none) in BOUNDS.items():
        value = params.get(name)
        if value is None and (none is True or (none == "init" and init is not None)):
            continue
        problem = _problem(value, least, whole) if value is not None else (
            "a whole number of at least 1 (None takes a pretrained encoder's size: with init only)"
            if none == "init" else f"a {'whole number' if whole else 'number'} of at least {least}")
        if problem:
            bad.append(f"{name}={value!r} ({problem})")
    for name, (low, high, high_ok) in SHARES.items():
        value = params.get(name)
        inside = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and low <= value and (value <= high if high_ok else value < high))
        if not inside:
            bad.append(f"{name}={value!r} (a share from {low:g} to {high:g}{'' if high_ok else ', below ' + f'{high:g}'})")
    if bad:
        raise ModelError("settings out of range: " + "; ".join(bad) + "\n  fix: set_params() them to values in range "
                         "(the defaults: EHRClassifier().get_params())")
