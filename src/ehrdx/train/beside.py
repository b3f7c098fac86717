"""`auto`'s members side by side: the members that fit themselves (LightGBM: gbm, gbm-counts) in a thread
beside the network (the GRU), each on half of the CPU threads.

On a 2-core machine neither side gains much from a second thread (the GRU at batch 64 about 1.2x, LightGBM
1.2-1.9x), so side by side the fit takes about the longer of the two instead of their sum: the demo cohort's
auto fit went from 2.0x to 1.68x the GRU's alone (BENCHMARKS.md, issue 14). Used only where it was measured
to help: 2+ torch threads, and the network on the CPU (on a GPU the network needs few CPU threads, so the
fitted members keep them all, one after the other as before).

What does not change: LightGBM's boosters are the same for any thread count (models/gbm.py), so the fitted
members are the same trees; the network trains on a fixed share of threads (half), so a seed gives the same
run again (its floats are those of a run at that many threads, which can differ in the last bits from one at
all of them). Nothing on the fitted side touches torch's random numbers.

Failures: a fitted member's error stops the network after its current epoch (the network's `on_epoch` checks),
and is raised in the caller; an error or Ctrl-C in the network tells the fitted side to stop (checked between
members and after each label's booster), waits at most STOP_WAIT seconds for it, and is raised at once. The
thread is a daemon: a booster in progress cannot be interrupted, and must not keep the process alive.
Checkpoints are written atomically, so a member stopped half way leaves none, and `--resume` fits it again
(the same trees)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

STOP_WAIT = 1.0  # seconds the caller waits for the fitted side to stop after the network failed


class Stopped(Exception):
    """The fitted members were told to stop (the network beside them failed or was interrupted)."""


class Beside:
    """`run(first, second)`: the fitted members' fit `first(check)` and the networks' fit `second(check)`,
    side by side when `active` (else one after the other). Each side calls its `check()` now and then: on the
    fitted side it raises Stopped once the network has failed; on the network side it raises the fitted side's
    error once there is one. `threads_for_fitted` is the LightGBM thread count the fitted members use."""

    def __init__(self, active: bool) -> None:
        self.total = torch.get_num_threads()
        self.active = active and self.total >= 2
        self.network_threads = max(1, self.total // 2) if self.active else self.total
        self.threads_for_fitted = self.total - self.network_threads if self.active else self.total
        self._stop = threading.Event()
        self._failure: list[BaseException] = []

    def _check_fitted(self) -> None:
        if self._stop.is_set():
            raise Stopped("the network beside the gbm members stopped")

    def _check_network(self) -> None:
        if self._failure:
            raise self._failure[0]

    def run(self, first: Callable[[Callable[[], None]], None], second: Callable[[Callable[[], None]], None]) -> None:
        if not self.active:
            first(lambda: None)
            second(lambda: None)
            return

        def work() -> None:
            try:
                first(self._check_fitted)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._failure.append(exc)

        thread = threading.Thread(target=work, name="ehrdx-fitted-members", daemon=True)
        thread.start()
        torch.set_num_threads(self.network_threads)
        try:
            second(self._check_network)
            thread.join()
        except BaseException:
            self._stop.set()
            thread.join(STOP_WAIT)
            raise
        finally:
            torch.set_num_threads(self.total)
        self._check_network()
