"""Old import path of the longitudinal cohort, kept so existing imports work: the one generator is
ehrdx.data.synth (process.py holds the process and its constants, longitudinal.py this cohort)."""

from ehrdx.data.synth.longitudinal import LongitudinalCohort, generate_longitudinal, write_longitudinal

__all__ = ["LongitudinalCohort", "generate_longitudinal", "write_longitudinal"]
