"""Fit time of `--model auto` against the GRU alone on the demo cohort (issue 14's bound: at most 2x).

Runs `ehrdx train --model gru` and `--model auto` one after the other, `--rounds` times, each in its own
process on the same data (`ehrdx synth --patients 20000 --seed 0`, as `ehrdx demo` builds it), and prints
one JSON line per run (fit seconds from metrics.json, wall seconds of the command, test metrics) and the
ratio auto / gru of each pair, so that the box's drift between pairs does not enter a ratio.

    PYTHONPATH=src python benchmarks/bench_auto_time.py --data /tmp/fit/data --rounds 2 --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synth(data: Path, patients: int) -> None:
    if not (data / "meds").exists():
        subprocess.run([sys.executable, "-m", "ehrdx", "synth", "--out", str(data), "--format", "meds",
                        "--patients", str(patients), "--seed", "0"], check=True, stdout=subprocess.DEVNULL)


def train(data: Path, model: str, out: Path) -> dict:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ehrdx", "train", "--meds", str(data / "meds"), "--labels",
                    f"map:{data / 'label_map.csv'}", "--model", model, "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    m = json.loads((out / "metrics.json").read_text())
    row = {"model": model, "fit_s": round(m["fit_seconds"], 2), "wall_s": round(wall, 2),
           "new_onset": [round(m["test_new_onset"]["macro_auroc"], 4), round(m["test_new_onset"]["macro_auprc"], 4)],
           "all": [round(m["test"]["macro_auroc"], 4), round(m["test"]["macro_auprc"], 4)]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of `ehrdx synth --format meds` (made if absent)")
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    args = ap.parse_args()
    synth(args.data, args.patients)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            pair = {}
            for model in ("gru", "auto"):
                row = {"round": r, "threads": os.environ.get("OMP_NUM_THREADS", "all"),
                       **train(args.data, model, Path(tmp) / f"{model}{r}")}
                pair[model] = row
                lines.append(row)
                print(json.dumps(row), flush=True)
            ratio = {"round": r, "auto_over_gru_fit": round(pair["auto"]["fit_s"] / pair["gru"]["fit_s"], 3),
                     "auto_over_gru_wall": round(pair["auto"]["wall_s"] / pair["gru"]["wall_s"], 3)}
            lines.append(ratio)
            print(json.dumps(ratio), flush=True)
    if args.out:
        with args.out.open("a") as f:
            f.write("".join(json.dumps(x) + "\n" for x in lines))


if __name__ == "__main__":
    main()
