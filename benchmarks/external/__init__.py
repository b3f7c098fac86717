"""External data sets for bench_external.py: generators installed from the package index, converted
to MEDS, and the one protocol run on each (see bench_external.py's docstring)."""
