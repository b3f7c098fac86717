"""The built-in synthetic cohort: one generator, two views, each with a known oracle.

- process.py: the generative process and every constant (labs, symptoms, noise codes, diseases).
- longitudinal.py: the process run visit by visit, written as MEDS, with the exact next-visit oracle.
- snapshot.py: the patient table, a snapshot of those same events at an index date, with labels from the
  following year and an oracle given the generator's full state at the index date.
- hospital.py, hospital_meds.py: a separate, hospital-shaped cohort for scale (long inpatient histories,
  about 5,000 codes, about 1,500 label categories), generated and written as MEDS chunk by chunk.
"""

from ehrdx.data.synth.hospital import HospitalShape
from ehrdx.data.synth.hospital_meds import write_hospital
from ehrdx.data.synth.longitudinal import LongitudinalCohort, generate_longitudinal, write_longitudinal
from ehrdx.data.synth.process import DISEASES, LABS, NOISE_CODES, SYMPTOM_CODES
from ehrdx.data.synth.snapshot import (
    INDEX_DATE,
    LABEL_WINDOW_DAYS,
    SyntheticCohort,
    generate_cohort,
    oracle_given_index_state,
    snapshot_table,
    table_to_csv_frame,
    window_labels,
    write_cohort,
)

__all__ = [
    "DISEASES", "INDEX_DATE", "LABEL_WINDOW_DAYS", "LABS", "NOISE_CODES", "SYMPTOM_CODES", "HospitalShape",
    "LongitudinalCohort", "SyntheticCohort", "generate_cohort", "generate_longitudinal", "oracle_given_index_state", "snapshot_table",
    "table_to_csv_frame", "window_labels", "write_cohort", "write_hospital", "write_longitudinal",
]
