"""Privacy, round 2: a header row that is data, identifier-like columns kept out of models, explanations
without exact dates or values, and temporary stores removed when a run is stopped by a signal."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ehrdx.data.synth_visits import generate_longitudinal, write_longitudinal
from ehrdx.tempdirs import remove_temporary_directories, temporary_directory

SRC = str(Path(__file__).resolve().parents[1] / "src")


# -- temporary stores on SIGTERM / Ctrl-C --------------------------------------------------------------

@pytest.fixture(scope="module")
def small_meds(tmp_path_factory):
    return write_longitudinal(generate_longitudinal(300, seed=5), tmp_path_factory.mktemp("sig") / "c")


def test_a_train_stopped_by_sigterm_removes_its_temporary_store(small_meds, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ehrdx", "train", "--meds", str(small_meds["meds"]), "--labels",
           f"map:{small_meds['label_map']}", "--model", "gru", "--hidden", "16", "--epochs", "500",
           "--out", str(tmp_path / "m")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        # wait until the store is complete (its meta file is written last) so training is under way
        while not list(tmp.glob("ehrdx_store_*/meta.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no temporary store appeared"
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143
    assert list(tmp.glob("ehrdx_store_*")) == []


def test_ctrl_c_removes_temporary_directories_and_still_interrupts():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by the test runner here")
    before = signal.getsignal(signal.SIGINT)
    path = temporary_directory("ehrdx_store_")
    (path / "subject_ids.bin").write_bytes(b"\x01" * 8)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes
        assert not path.exists()
    finally:
        signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        remove_temporary_directories()
