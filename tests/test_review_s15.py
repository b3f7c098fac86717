"""Defects found reviewing session s15's changes."""

import pytest

from cli_run import GOLDEN, run, words


@pytest.mark.parametrize(("command", "out"), [(["evaluate"], "e.json"), (["predict", "--format", "meds-eval"], "p"),
                                             (["predict"], "p.csv")])
def test_a_misspelt_split_is_refused_before_the_events_are_read(command, out, tmp_path):
    # report refused it at once; evaluate and predict converted the whole dataset first
    r = run(*command, "--model", GOLDEN / "gru_model", "--meds", GOLDEN / "meds", "--split", "heldout",
            "--out", tmp_path / out)
    assert r.exit_code == 2, r.output
    assert "--split must be held_out (or test), tuning, train or all, not 'heldout'" in words(r.output)
    assert "event store:" not in r.output
