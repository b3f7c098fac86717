"""What a new user reads (README.md, `ehrdx --help`, `ehrdx COMMAND --help`) against what the commands do."""

import re

from cli_run import run, words


def plain(text: str) -> str:
    """Help or table output as one line of words: rich's boxes and line wrapping undone."""
    return words(re.sub(r"[\u2500-\u257f]", " ", text))


def test_help_says_auto_mixes_its_members_with_one_weighting_for_all_labels():
    # The rule (train/mixing.py, README): one weighting for all labels, not weights per label.
    for args in (("train", "--help"), ("models",), ("demo", "--help")):
        said = plain(run(*args).output)
        assert "averaged per label" not in said
        assert "one weighting for all labels" in said
