"""ICD-10-CM parents and descriptions for labels, offline, from the optional `simple-icd-10-cm` package
(MIT, FY2026 code set; `pip install 'ehrdx[icd]'`). Without it, nothing is filled in.

A label that is a valid ICD-10-CM code (with or without the dot) and has no parent from the label map
gets as parent its nearest ancestor that is a label of the vocabulary (e.g. E11.65 -> E11 when E11 is
a label), else its direct parent; and gets the official description if it has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The shape of an ICD-10-CM code (E11, E11.65, E1165): the package (about 2 s to load) is only loaded when
# some label has it.
_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


def available() -> bool:
    try:
        import simple_icd_10_cm  # noqa: F401
    except ImportError:
        return False
    return True


def fill_icd10(info: dict[str, dict], labels: Iterable[str]) -> list[str]:
    """Fill parent/description of the labels in `info` in place; returns the labels it filled."""
    if not any(_SHAPE.match(label) for label in info) or not available():
        return []
    import simple_icd_10_cm as cm

    known = set(labels)
    filled = []
    for label, meta in info.items():
        if not cm.is_valid_item(label):
            continue
        changed = False
        if not meta.get("parent"):
            ancestors = [a for a in cm.get_ancestors(label) if cm.is_valid_item(a)]
            in_vocab = [a for a in ancestors if a in known and a != label]
            parent = in_vocab[0] if in_vocab else (ancestors[0] if ancestors else None)
            if parent:
                meta["parent"] = parent
                changed = True
        if not meta.get("description"):
            meta["description"] = cm.get_description(label)
            changed = True
        if changed:
            filled.append(label)
    return filled
