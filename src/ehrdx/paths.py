"""Output paths, checked before any work is done: never over what the user gave, never where it cannot go.

Every command that writes calls `check_output` first with its inputs. An output may not be an input
(the same file after resolving relative paths, symbolic and hard links), nor lie inside an input
directory (a model, a MEDS dataset, an OMOP export, a store: writing there changes what the next
run reads). A file output may not be an existing directory, a directory output not an existing file,
and the nearest existing folder on the way must be writable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ehrdx.errors import DataError

TABLE_SUFFIXES = (".csv", ".parquet")


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            pass
    return _resolved(a) == _resolved(b)


def _writable(directory: Path) -> bool:
    mode = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        return os.access(directory, mode, effective_ids=True)
    return os.access(directory, mode)


def label_map_path(labels: str | None) -> Path | None:
    """The file of a `map:FILE` label selection, else None (also for `map:` without a file: refused as a spec)."""
    if labels and labels.startswith("map:") and labels[len("map:"):]:
        return Path(labels[len("map:"):])
    return None


def check_output(
    out: str | Path | None,
    inputs: Mapping[str, str | Path | None],
    *,
    kind: str = "file",
    option: str = "--out",
    suffixes: tuple[str, ...] | None = None,
) -> None:
    """Refuse an output path that would overwrite an input or cannot be written, before any work.

    `inputs` names each given path by what it is (e.g. {"patient table": data});
    None entries are skipped. `kind` is "file" or "dir"; `suffixes` limits a file's suffix."""
    if out is None:
        return
    out = Path(out)
    out_r = _resolved(out)
    for role, given in inputs.items():
        if given is None:
            continue
        given = Path(given)
        if _same(out, given):
            raise DataError(f"{option} is also the input {role}: ehrdx never overwrites what it reads",
                            file=str(out), fix=f"give {option} a new path, not {given}")
        given_r = _resolved(given)
        if given_r.is_dir() and out_r.is_relative_to(given_r):
            raise DataError(f"{option} lies inside {given}, the input {role}: writing there would change "
                            "what the next run reads", file=str(out),
                            fix=f"give {option} a path outside {given}")
    if kind == "file" and out_r.is_dir():
        raise DataError(f"{option} is an existing directory, a file is expected", file=str(out),
                        fix=f"give a file path, e.g. {out / 'output'}{(suffixes or ('',))[0]}")
    if kind == "dir" and out_r.exists() and not out_r.is_dir():
        raise DataError(f"{option} is an existing file, a directory is expected", file=str(out),
                        fix=f"give a directory path (it is created if needed), not the file {out}")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise DataError(f"{option} ends in '{out.suffix}': the suffix names the format written, and this "
                        f"command writes {' or '.join(suffixes)}", file=str(out),
                        fix=f"give a file name ending in {' or '.join(suffixes)}")
    if out_r.exists():
        target = out_r if kind == "dir" else out_r.parent
        if not _writable(target) or (kind == "file" and not os.access(out_r, os.W_OK)):
            raise DataError(f"{option} cannot be written (read-only or no permission)", file=str(out),
                            fix=f"give {option} a path in a directory you can write to")
        return
    nearest = out_r.parent
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        raise DataError(f"{option} cannot be created: {nearest} is a file, not a directory", file=str(out),
                        fix=f"give {option} a path whose folders are directories")
    if not _writable(nearest):
        raise DataError(f"{option} cannot be created: the directory {nearest} is read-only or not yours to write",
                        file=str(out), fix=f"give {option} a path in a directory you can write to")
