"""Readers, the patient table, and the synthetic cohort generator."""
