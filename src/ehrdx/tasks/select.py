"""Which codes are disease labels: by prefix, by regular expression, or by a mapping file.

A spec is one string:
  prefix:DX//          codes starting with DX//; the label is the rest of the code (DX//E11.9 -> E11.9)
  prefix:DX//:3        the same, cut to 3 characters (ICD-10 categories: DX//E11.9 -> E11)
  regex:^DX//(E1[01])  codes the expression matches (re.search); the label is group 1 if it has one,
                       else the whole code
  map:FILE             a CSV (columns code,label[,description,parent,introduced_at]), JSON or YAML ({code: label} or
                       {label: [codes]}) file; a code ending in * matches every code with that prefix
With a map, a code may belong to several labels: every entry that matches it counts (e.g. `E11*` ->
E11 and `E11.9` -> E11.9 make an E11.9 record a positive for both the category and the finer code).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ehrdx.data.csv_errors import header_hint
from ehrdx.data.spelling import spelling_clashes
from ehrdx.errors import DataError


@dataclass
class LabelSelector:
    kind: str  # prefix | regex | map
    pattern: str = ""
    chars: int | None = None
    mapping: dict[str, list[str]] = field(default_factory=dict)  # kind 'map': code or prefix* -> labels
    info: dict[str, dict] = field(default_factory=dict)  # label -> description, parent, introduced_at
    spec: str = ""

    @classmethod
    def parse(cls, spec: str) -> LabelSelector:
        kind, _, rest = spec.partition(":")
        if kind == "prefix" and rest:
            prefix, sep, chars = rest.rpartition(":")
            if sep and chars.lstrip("-").isdigit() and int(chars) < 1:  # :0 kept the whole code, :-1 no label
                raise DataError(f"label spec {spec!r}: the characters kept after the prefix must be at least 1",
                                column="--labels", fix="e.g. prefix:ICD10CM//:3, or prefix:ICD10CM// for whole codes")
            if sep and chars.isdigit():
                return cls("prefix", prefix, int(chars), spec=spec)
            return cls("prefix", rest, spec=spec)
        if kind == "regex" and rest:
            try:
                re.compile(rest)
            except re.error as exc:
                raise DataError(f"label regular expression does not compile: {exc}", column="--labels",
                                fix="check the expression after 'regex:'") from None
            return cls("regex", rest, spec=spec)
        if kind == "map" and rest:
            mapping, info = _read_map(Path(rest))
            return cls("map", rest, mapping=mapping, info=info, spec=spec)
        raise DataError(f"unknown label spec {spec!r}", column="--labels",
                        fix="use prefix:PREFIX[:N], regex:PATTERN or map:FILE")

    def labels_of(self, code: str) -> list[str]:
        """The labels this code is a record of (empty if none)."""
        if self.kind == "prefix":
            if not code.startswith(self.pattern):
                return []
            rest = code[len(self.pattern):]
            rest = rest[: self.chars] if self.chars else rest
            return [rest] if rest else []
        if self.kind == "regex":
            m = re.search(self.pattern, code)
            if not m:
                return []
            label = m.group(1) if m.re.groups and m.group(1) else m.group(0)
            # an empty match (regex:x* on any code) is no label: an empty name is the targets table's marker row
            return [label] if label else []
        out = list(self.mapping.get(code, []))
        for key, labels in self._prefixes():
            if code.startswith(key):
                out += [lab for lab in labels if lab not in out]
        return out

    def _prefixes(self) -> list[tuple[str, list[str]]]:
        if not hasattr(self, "_prefix_cache"):
            self._prefix_cache = [(k[:-1], v) for k, v in self.mapping.items() if k.endswith("*")]
        return self._prefix_cache

    def cut_short(self, code: str) -> bool:
        """Whether a prefix selection reads less of this code than it asks: the code is the prefix itself (no
        label), or holds fewer characters after it than `:N` keeps (a label of its own, `E1` beside `E11`)."""
        if self.kind != "prefix" or not code.startswith(self.pattern):
            return False
        rest = len(code) - len(self.pattern)
        return rest == 0 or (self.chars is not None and rest < self.chars)

    def outside_group(self, code: str) -> bool:
        """Whether a regular expression with a group matches this code but its group 1 does not take part, or
        takes nothing (`regex:^DX//(E1\\d)?` on DX//J35): the label is then the whole match (`DX//`)."""
        if self.kind != "regex":
            return False
        m = re.search(self.pattern, code)
        return bool(m and m.re.groups and not m.group(1) and m.group(0))

    def labels_missed_by_case(self, code: str) -> list[str]:
        """The labels this code would be a record of if letter case were ignored, but is not as written
        (`dx//e11.2` against a map's `DX//E11*`). Codes stay case-sensitive; this only says what that leaves out."""
        low = code.lower()
        if self.kind == "prefix":
            if code.startswith(self.pattern) or not low.startswith(self.pattern.lower()):
                return []
            rest = code[len(self.pattern):]
            return [rest[: self.chars] if self.chars else rest] if rest else []
        if self.kind == "regex":
            m = re.search(self.pattern, code, re.IGNORECASE)
            if m is None or re.search(self.pattern, code):
                return []
            return [m.group(1) if m.re.groups and m.group(1) else m.group(0)]
        exact, prefixes, starts = self._folded()
        found = [lab for key in exact.get(low, ()) for lab in self.mapping[key]]
        if low.startswith(starts):  # one C-level test rejects most codes before the loop over prefixes
            found += [lab for lowered, labels in prefixes if low.startswith(lowered) for lab in labels]
        if not found:
            return []
        have = self.labels_of(code)
        return list(dict.fromkeys(lab for lab in found if lab not in have))

    def _folded(self) -> tuple[dict[str, list[str]], list[tuple[str, list[str]]], tuple[str, ...]]:
        """The map's keys in lower case: exact codes (lowered -> keys), and prefixes with their labels."""
        if not hasattr(self, "_folded_cache"):
            exact: dict[str, list[str]] = {}
            for key in self.mapping:
                if not key.endswith("*"):
                    exact.setdefault(key.lower(), []).append(key)
            prefixes = [(k.lower(), v) for k, v in self._prefixes()]
            self._folded_cache = exact, prefixes, tuple(k for k, _ in prefixes)
        return self._folded_cache

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "chars": self.chars, "mapping": self.mapping,
                "info": self.info, "spec": self.spec}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSelector:
        mapping = {k: [v] if isinstance(v, str) else list(v) for k, v in d["mapping"].items()}
        return cls(d["kind"], d["pattern"], d["chars"], mapping, dict(d.get("info", {})), d["spec"])


def _read_map(path: Path) -> tuple[dict[str, list[str]], dict[str, dict]]:
    if not path.exists():
        raise DataError("label map file not found", file=str(path), fix="check the path after 'map:'")
    suffix = path.suffix.lower()
    mapping: dict[str, list[str]] = {}
    info: dict[str, dict] = {}
    if suffix == ".csv":
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which would be part of the first name
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError("not UTF-8 text", file=str(path), fix="save the label map as UTF-8 (in Excel: CSV UTF-8)"
                            ) from None
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            for col in ("code", "label"):
                if col not in cols:
                    raise DataError(f"no '{col}' column (columns: {', '.join(repr(c) for c in cols)})",
                                    file=str(path), column=col, fix=header_hint(col, cols) or
                                    "a label map CSV has the columns code,label and optionally description")
            for i, row in enumerate(reader):
                code, label = (row["code"] or "").strip(), (row["label"] or "").strip()
                if not code or not label:
                    raise DataError("empty code or label", file=str(path), rows=[i],
                                    fix="every row maps one code to one label")
                _add(mapping, code, label, path, i)
                for key in ("description", "parent", "introduced_at"):
                    if row.get(key):
                        info.setdefault(label, {})[key] = row[key].strip()
        check_map_names(mapping, path)
        return mapping, info
    if suffix in (".json", ".yaml", ".yml"):
        data = _read_structured(path, suffix)
        if not isinstance(data, dict):
            raise DataError("a label map must be a mapping", file=str(path),
                            fix="write {code: label} or {label: [code, ...]}")
        for i, (key, value) in enumerate(data.items()):
            if isinstance(value, list):  # label: [codes]
                for code in value:
                    _add(mapping, str(code).strip(), str(key).strip(), path, i)
            else:  # code: label
                _add(mapping, str(key).strip(), str(value).strip(), path, i)
        check_map_names(mapping, path)
        return mapping, info
    raise DataError(f"unsupported label map format '{suffix}'", file=str(path), fix="use .csv, .json or .yaml")


def _read_structured(path: Path, suffix: str) -> object:
    """A JSON or YAML label map; a syntax error names the file, the line and the fix (never a traceback)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text", file=str(path), fix="save the label map as UTF-8") from None
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno} ({exc.msg})"
        what = "JSON"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown position"
        problem = getattr(exc, "problem", None)
        where += f" ({problem})" if problem else ""
        what = "YAML"
    shape = ('{"code": "label", ...} or {"label": ["code", ...], ...}' if what == "JSON" else
             "one 'code: label' or 'label: [code, ...]' per line (quote a code or label that contains ':', "
             "'#', '[' or '{')")
    raise DataError(f"malformed {what} at {where}", file=str(path), fix=f"correct the syntax there; a label map "
                    f"is {shape}")


def _add(mapping: dict[str, list[str]], code: str, label: str, path: Path, row: int) -> None:
    labels = mapping.setdefault(code, [])
    if label not in labels:
        labels.append(label)


def check_map_names(mapping: dict[str, list[str]], path: Path) -> None:
    """A label map is one code -> one label per entry: a comma in a code or label (``D1,D4`` or
    ``Disease_A, Disease_C``) is an Excel-style list that would silently become one name, and labels
    that differ only in case would become separate labels. Both are refused (surrounding spaces are
    stripped). Codes and labels are vocabulary, not patient data, so they are named."""
    codes = sorted(code for code in mapping if "," in code)
    labels = sorted({lab for labs in mapping.values() for lab in labs if "," in lab})
    if codes or labels:
        what = "; ".join(x for x in (f"code(s) {', '.join(repr(c) for c in codes[:5])}" if codes else "",
                                      f"label(s) {', '.join(repr(lab) for lab in labels[:5])}" if labels else "")
                         if x)
        raise DataError(f"a comma inside a code or label ({what}): each entry maps one code to one label",
                        file=str(path), column="code" if codes else "label",
                        fix="write one entry (row) per code and label; a readable name with a comma belongs in "
                        "the description column")
    check_label_spellings([lab for labs in mapping.values() for lab in labs], file=str(path), column="label",
                          fix="write each label one way in the map (labels are case-sensitive)")


def check_label_spellings(labels, *, file: str | None = None, column: str | None = None, fix: str) -> None:
    """Refuse labels that differ only in case or surrounding spaces (they would be separate labels)."""
    clashes = spelling_clashes(labels)
    if clashes:
        shown = "; ".join(" / ".join(repr(s) for s in spellings) for spellings in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise DataError(f"{len(clashes)} label(s) are spelled in more than one case ({shown}{more}): they would "
                        "become separate labels", file=file, column=column, fix=fix)
