"""Feature preprocessing for patient tables, fit on training patients only.

Numeric columns are standardised (mean/std of training patients), missing cells imputed with the
training mean and flagged by a missing indicator. Categorical columns are one-hot encoded with an
unknown bucket. Code lists become bags of code ids for an embedding bag, with id 0 the unknown bucket.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ehrdx.data.table import PatientTable, TableSchema

UNKNOWN = "<unknown>"
MISSING = "<missing>"


@dataclass
class EncodedFeatures:
    """Model-ready features of N samples: a dense block and a ragged bag of code ids."""

    dense: np.ndarray  # [N, D] float32
    code_ids: np.ndarray  # [total] int64, flat
    code_offsets: np.ndarray  # [N + 1] int64: sample i's codes are code_ids[off[i]:off[i+1]]
    unknown: dict[str, int] = field(default_factory=dict)  # unseen categories / codes, counted
    # [total] float32 how often each code occurs in its sample (event histories: each distinct code once with
    # its count); None: once each (a table's cells)
    code_counts: np.ndarray | None = None

    def __len__(self) -> int:
        return self.dense.shape[0]


class TablePreprocessor:
    """Learned state (trailing underscore) comes from training patients only."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema

    def fit(self, table: PatientTable) -> TablePreprocessor:
        x = table.numeric
        if x.shape[1]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a column empty in training
                mean = np.nanmean(x, axis=0)
                std = np.nanstd(x, axis=0)
            mean = np.where(np.isnan(mean), 0.0, mean)
            std = np.where(~np.isfinite(std) | (std < 1e-12), 1.0, std)  # constant column: leave unscaled
        else:
            mean = std = np.zeros(0)
        self.numeric_mean_ = mean.astype(np.float64)
        self.numeric_std_ = std.astype(np.float64)
        self.categories_ = {}
        for col, vals in table.categorical.items():
            cats = sorted({MISSING if v is None else v for v in vals})
            self.categories_[col] = [UNKNOWN, *cats]
        codes = sorted({self._token(col, c) for col, lists in table.codes.items() for lst in lists for c in lst})
        self.code_vocab_ = [UNKNOWN, *codes]
        self._build_index()
        return self

    def _token(self, column: str, code: str) -> str:
        # With one code column the code is the token; with several, the column keeps them apart.
        return code if len(self.schema.codes) <= 1 else f"{column}//{code}"

    def _build_index(self) -> None:
        self._cat_index = {c: {v: i for i, v in enumerate(vals)} for c, vals in self.categories_.items()}
        self._code_index = {c: i for i, c in enumerate(self.code_vocab_)}

    @property
    def n_dense(self) -> int:
        return 2 * len(self.numeric_mean_) + sum(len(v) for v in self.categories_.values())

    @property
    def n_codes(self) -> int:
        return len(self.code_vocab_)

    def dense_feature_names(self) -> list[str]:
        names = [*self.schema.numeric, *(f"{c}__missing" for c in self.schema.numeric)]
        for col, vals in self.categories_.items():
            names += [f"{col}={v}" for v in vals]
        return names

    def transform(self, table: PatientTable) -> EncodedFeatures:
        n = len(table)
        unknown: dict[str, int] = {}
        x = table.numeric
        missing = np.isnan(x)
        z = (np.where(missing, self.numeric_mean_, x) - self.numeric_mean_) / self.numeric_std_
        blocks = [z, missing.astype(np.float64)]
        for col in self.schema.categorical:
            index = self._cat_index[col]
            onehot = np.zeros((n, len(index)))
            ids = np.array([index.get(MISSING if v is None else v, 0) for v in table.categorical[col]], dtype=np.int64)
            onehot[np.arange(n), ids] = 1.0
            n_unknown = int((ids == 0).sum())
            if n_unknown:
                unknown[f"category:{col}"] = n_unknown
            blocks.append(onehot)
        dense = np.concatenate(blocks, axis=1).astype(np.float32)

        per_sample: list[list[int]] = [[] for _ in range(n)]
        n_unknown_codes = 0
        for col in self.schema.codes:
            for i, lst in enumerate(table.codes[col]):
                for c in lst:
                    j = self._code_index.get(self._token(col, c), 0)
                    n_unknown_codes += j == 0
                    per_sample[i].append(j)
        if n_unknown_codes:
            unknown["codes"] = int(n_unknown_codes)
        lengths = np.array([len(p) for p in per_sample], dtype=np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((j for p in per_sample for j in p), dtype=np.int64, count=int(offsets[-1]))
        return EncodedFeatures(dense=dense, code_ids=flat, code_offsets=offsets, unknown=unknown)

    def to_dict(self) -> dict:
        return {
            "schema": self.schema.to_dict(),
            "numeric_mean": self.numeric_mean_.tolist(),
            "numeric_std": self.numeric_std_.tolist(),
            "categories": self.categories_,
            "code_vocab": self.code_vocab_,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TablePreprocessor:
        self = cls(TableSchema.from_dict(d["schema"]))
        self.numeric_mean_ = np.asarray(d["numeric_mean"], dtype=np.float64)
        self.numeric_std_ = np.asarray(d["numeric_std"], dtype=np.float64)
        self.categories_ = {k: list(v) for k, v in d["categories"].items()}
        self.code_vocab_ = list(d["code_vocab"])
        self._build_index()
        return self
