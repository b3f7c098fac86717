"""Temporary directories that hold patient data (event stores): removed at exit, and on SIGTERM or
Ctrl-C (SIGINT) too, since `atexit` alone does not run when a process is terminated by a signal.

The handlers are installed only where the signal still has Python's default disposition (a host
application's own handler is left alone) and only from the main thread. On SIGTERM the directories are
removed and the process exits with 143 (128 + 15) through SystemExit, so `finally` blocks and `atexit`
still run; on SIGINT they are removed and the previous handler raises KeyboardInterrupt as usual
(a shell reports 130 for an uncaught one; the CLI prints "Aborted!"). A forked child (e.g. a data loader
worker) never removes its parent's directories.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

_directories: list[Path] = []
_owner_pid = os.getpid()
_previous: dict[int, object] = {}


def temporary_directory(prefix: str) -> Path:
    """A new directory in the system temp dir, removed at exit or when the process is stopped by a signal."""
    global _owner_pid
    if not _directories:
        _owner_pid = os.getpid()
        atexit.register(remove_temporary_directories)
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _directories.append(path)
    _install_handlers()
    return path


def remove_temporary_directories() -> None:
    """Remove every directory made by :func:`temporary_directory` in this process (idempotent)."""
    if os.getpid() != _owner_pid:
        return
    for path in _directories:
        shutil.rmtree(path, ignore_errors=True)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    for signum, default in defaults.items():
        current = signal.getsignal(signum)
        if current is _on_signal or current is not default:
            continue
        _previous[signum] = current
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame) -> None:
    if os.getpid() != _owner_pid:  # a forked child: behave as it would have without us
        signal.signal(signum, _previous.get(signum, signal.SIG_DFL))
        os.kill(os.getpid(), signum)
        return
    remove_temporary_directories()
    previous = _previous.get(signum)
    if signum == signal.SIGINT and callable(previous):
        previous(signum, frame)  # default_int_handler: raises KeyboardInterrupt
    raise SystemExit(128 + signum)
