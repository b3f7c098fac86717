"""Rows for new labels: start each from what is known about it, so that little training is needed.

Strategies (`init_rows`):
  parent       the row of its parent label (e.g. E11 for a new E11.9), when the parent is in the vocabulary
  code         the model's input embedding of the label's own code, when the model has seen that code as
               an input (only sequence models share the state width with their input embeddings)
  description  a similarity-weighted mean of the rows of labels whose descriptions share words with its
               description
  mean         the mean of the existing rows
  auto         the first of parent, code, description that applies, else mean
  probe        (in ehrdx.update) rows fit by logistic regression on the frozen model's states, then
               fine-tuned: linear probing before fine-tuning (LP-FT)
Every strategy falls back to `mean` where it does not apply, and a new label's bias starts at its
log-odds in the training data. Which strategy is used for each label is recorded.
"""

from __future__ import annotations

import re

import numpy as np
import torch

STRATEGIES = ("auto", "parent", "code", "description", "mean", "probe")


def _words(text: str | None) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", (text or "").lower()) if len(w) > 2}


def init_rows(model, vocab_before, new_labels: list[str], info: dict[str, dict], strategy: str,
              label_codes: dict[str, list[str]], encoder=None) -> tuple[torch.Tensor, list[str]]:
    """[k, D] rows for the new labels, and the strategy that produced each."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown init strategy '{strategy}' (choose from {', '.join(STRATEGIES)})")
    head = model.head.rows().detach()
    mean = head.mean(0)
    norm = head.norm(dim=1).mean()
    code_index = {c: i + 1 for i, c in enumerate(encoder.codes)} if encoder is not None else {}
    code_table = getattr(model, "code_embedding", None)
    rows, used = [], []
    for lab in new_labels:
        meta = info.get(lab, {})
        candidates = [strategy] if strategy != "auto" else ["parent", "code", "description"]
        row, how = None, "mean"
        for how_try in candidates:
            if how_try == "parent" and meta.get("parent") in vocab_before:
                row = head[vocab_before.index(meta["parent"])].clone()
            elif how_try == "code" and code_table is not None and code_table.weight.shape[1] == head.shape[1]:
                ids = [code_index[c] for c in label_codes.get(lab, []) if c in code_index]
                if ids:
                    emb = code_table.weight.detach()[ids].mean(0)
                    row = emb * (norm / emb.norm().clamp(min=1e-8))  # on the scale of the label rows
            elif how_try == "description":
                mine = _words(meta.get("description"))
                sims = np.array([len(mine & _words(info.get(o, {}).get("description"))) for o in vocab_before.labels],
                                dtype=np.float64)
                if mine and sims.sum() > 0:
                    w = torch.from_numpy(sims / sims.sum()).to(head.dtype)
                    row = (w[:, None] * head).sum(0)
            if row is not None:
                how = how_try
                break
        rows.append(mean.clone() if row is None else row)
        used.append(how)
    return torch.stack(rows) if rows else head.new_zeros((0, head.shape[1])), used
