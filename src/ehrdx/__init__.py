"""ehrdx: multi-label disease prediction from EHR."""
__version__ = "0.1.0"


def load(directory):
    """Load a saved model directory (see :class:`ehrdx.api.EHRClassifier`)."""
    from ehrdx.artifacts import load_model

    return load_model(directory)


def __getattr__(name):
    # Heavy imports (torch) only when the API is used, so `import ehrdx` stays light.
    if name == "EHRClassifier":
        from ehrdx.api import EHRClassifier

        return EHRClassifier
    raise AttributeError(name)
