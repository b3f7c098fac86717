"""ehrdx: multi-label disease prediction from EHR (patient tables and event streams).

The public names are in `__all__`; import them from here (`from ehrdx import EventClassifier`). Each is
imported on first use, so `import ehrdx` stays light: no torch, polars or scikit-learn until a name is used.

  EHRClassifier                    the one estimator, for a patient table or event streams (EventClassifier:
                                   its former name for event streams, the same class)
  load                             a saved model directory of either kind
  open_store, patient_splits       an event source (MEDS, long table or OMOP) as a store, and its patient splits
  update_model                     add labels to a trained event model (`ehrdx update`)
  build_report                     the HTML report of predictions on samples (`ehrdx report`)
  explain_sample                   why one prediction: attributions over past events (`ehrdx explain`)
  search_settings                  try settings on the tuning patients and set the best (`ehrdx train --search`)
"""

from ehrdx.version import __version__

__all__ = ["EHRClassifier", "EventClassifier", "__version__", "build_report", "explain_sample", "load",
           "open_store", "patient_splits", "search_settings", "update_model"]


def load(directory):
    """Load a saved model directory of any family (a model of a table or of event streams)."""
    # Importing the estimator's module registers its model families with ehrdx.artifacts.
    import ehrdx.estimator  # noqa: F401
    from ehrdx.artifacts import load_model

    return load_model(directory)


def __getattr__(name: str):
    # Written out name by name (not a table of module paths) so that tests/test_architecture.py sees them.
    if name == "EHRClassifier":
        from ehrdx.estimator import EHRClassifier as value
    elif name == "EventClassifier":
        from ehrdx.estimator import EventClassifier as value
    elif name == "open_store":
        from ehrdx.events_pipeline import open_store as value
    elif name == "patient_splits":
        from ehrdx.events_pipeline import patient_splits as value
    elif name == "update_model":
        from ehrdx.update import update_model as value
    elif name == "build_report":
        from ehrdx.evaluate.html import build_report as value
    elif name == "explain_sample":
        from ehrdx.explain import explain_sample as value
    elif name == "search_settings":
        from ehrdx.search import search_settings as value
    else:
        raise AttributeError(f"module 'ehrdx' has no attribute {name!r}")
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
