"""Kept so that the old import path works: patient splits live in ehrdx.data.splits (the data layer, where
the synthetic cohorts and the sources' default splits use them)."""

from ehrdx.data.splits import kfold_patients, split_patients

__all__ = ["kfold_patients", "split_patients"]
