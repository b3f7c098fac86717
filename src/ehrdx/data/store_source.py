"""What a store was built from, so that a command given the same `--store` folder and the same data opens it
instead of converting the events again (at hospital scale a conversion is a minute or more per command).

The record, `source.json` in the store folder, holds every input file's path, size, modification time and a
digest of its ends, the conversion's settings (visit gap, --until, the events table's columns, the OMOP
reading) and the store format and ehrdx versions. It is written last, once the store is complete, and removed before a conversion
starts: a store left half-built by a crash has none and is converted again. Any difference converts again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ehrdx.data.store import STORE_VERSION
from ehrdx.version import __version__

SOURCE = "source.json"


EDGE = 1 << 16  # bytes read from each end of a file for its digest


def _digest(path: Path, size: int) -> str:
    """A digest of the file's first and last 64 KiB (the whole of a smaller file): a file rewritten within the
    file system's clock tick keeps its time, and a small one often its size, but not these bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(EDGE))
        if size > 2 * EDGE:
            f.seek(size - EDGE)
        h.update(f.read(EDGE))
    return h.hexdigest()


def _files(root: Path, skip: Path) -> list[list]:
    """[path, size, mtime_ns, digest] of `root` (a file) or of every file below it, but those inside `skip`."""
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for p in paths:
        if p == skip or skip in p.parents:
            continue
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns, _digest(p, st.st_size)])
    return out


def source_record(inputs: Path, store_dir: Path, settings: dict) -> dict:
    """What a conversion of `inputs` (a MEDS folder, an events file or an OMOP export) into `store_dir` with
    `settings` reads: comparing two records tells whether the store would come out the same."""
    inputs, store_dir = Path(inputs).resolve(), Path(store_dir).resolve()
    return {"store_version": STORE_VERSION, "ehrdx_version": __version__, "input": str(inputs),
            "settings": settings, "files": _files(inputs, store_dir)}


def built_from(store_dir: Path, record: dict) -> bool:
    """Whether the store in `store_dir` is complete and was converted from exactly `record`'s files and
    settings."""
    path = Path(store_dir) / SOURCE
    try:
        return json.loads(path.read_text()) == json.loads(json.dumps(record))  # as JSON stores it (tuples)
    except (OSError, ValueError):
        return False


def forget_source(store_dir: Path) -> None:
    """Before a conversion: the folder no longer holds a complete store of any source."""
    (Path(store_dir) / SOURCE).unlink(missing_ok=True)


def record_source(store_dir: Path, record: dict) -> None:
    """After a complete conversion (written under another name and renamed, so it is whole or absent)."""
    tmp = Path(store_dir) / (SOURCE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(Path(store_dir) / SOURCE)
