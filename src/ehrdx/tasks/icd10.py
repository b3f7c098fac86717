"""ICD-10-CM parents and descriptions for labels, offline, from the optional `simple-icd-10-cm` package
(MIT, FY2026 code set; `pip install 'ehrdx[icd]'`). Without it, nothing is filled in.

A label known to be an ICD-10-CM code gets, if the label map gave none, as parent its nearest ancestor
that is a label of the vocabulary (e.g. E11.65 -> E11 when E11 is a label), else its direct parent; and the
official description. Known means: the label is a valid ICD-10-CM code (with or without the dot) and one of
the codes that record it is in the ICD-10-CM vocabulary by its prefix (`ICD10CM//E11.65`, MIMIC's
`DIAGNOSIS//ICD//10//E1165`) and reads as the label or a finer code of it. A name that merely looks like a
code (`L0213` from another vocabulary, a patient table's label) is not described: a wrong description
misleads more than none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise

# The shape of an ICD-10-CM code (E11, E11.65, E1165): the package (about 2 s to load) is only loaded when
# some label has it.
_SHAPE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")

# A vocabulary part of a code that says ICD-10-CM: ICD10CM, ICD-10-CM, ICD10-CM ('-', '_', ' ' aside).
_CM_NAMES = {"ICD10CM"}


def is_icd10cm_code(code: str, label: str) -> bool:
    """Whether `code` is in the ICD-10-CM vocabulary by its prefix and records `label` (itself or finer)."""
    *vocab, value = re.split(r"/+", code)
    names = [re.sub(r"[-_ ]", "", v).upper() for v in vocab]
    says_cm = any(n in _CM_NAMES for n in names) or any(a == "ICD" and b == "10" for a, b in pairwise(names))
    return says_cm and value.replace(".", "").upper().startswith(label.replace(".", "").upper())


def available() -> bool:
    try:
        import simple_icd_10_cm  # noqa: F401
    except ImportError:
        return False
    return True


def fill_icd10(info: dict[str, dict], labels: Iterable[str]) -> list[str]:
    """Fill parent/description of the labels in `info` known to be ICD-10-CM codes (by their `codes`, see
    the module's docstring) in place; returns the labels it filled."""
    cm_labels = [label for label, meta in info.items() if _SHAPE.match(label)
                 and any(is_icd10cm_code(code, label) for code in meta.get("codes") or [])]
    if not cm_labels or not available():
        return []
    import simple_icd_10_cm as cm

    known = set(labels)
    filled = []
    for label in cm_labels:
        meta = info[label]
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
