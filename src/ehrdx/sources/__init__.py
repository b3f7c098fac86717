"""Sources: what the estimator learns from, behind one small protocol (`ehrdx.sources.base.Source`).

  table.py   a patient table (one row per patient): the degenerate source of one prediction time per patient
  events.py  an event store (from MEDS, a long events table or an OMOP export), with the task's windows or
             given targets as labels

Everything above a source (split -> fit -> thresholds -> evaluate -> baselines -> report -> save) is written
once, in the estimator, and asks the source only for labels, an encoder, samples and model inputs.
"""
