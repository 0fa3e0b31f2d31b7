"""SIGINT and SIGTERM: inside a training loop they ask the loop to stop after the current step
(it writes a checkpoint first); anywhere else they stop the script at once."""
from __future__ import annotations

import contextlib
import signal

from .errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install(handler) -> dict:
    previous = {}
    for sig in SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    return previous


def _restore(previous: dict):
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _raise_interrupted(signum, frame):
    raise Interrupted(f"{signal.Signals(signum).name} received: stopped; the runs already "
                      "finished and the last checkpoint are kept", 128 + signum)


@contextlib.contextmanager
def signals_raise_interrupted():
    """Outside a training loop (decoding data, tables, figures, between runs) a signal raises
    Interrupted where the script is: every write is atomic, so nothing half-written remains."""
    previous = _install(_raise_interrupted)
    try:
        yield
    finally:
        _restore(previous)


class StopRequest:
    """While entered, a signal is only noted (`signal`): the loop finishes its step, writes a
    checkpoint and stops. A second signal kills at once, except under torchrun, which repeats
    the terminal's Ctrl-C to every worker a moment later (that must not kill a worker while it
    writes its checkpoint; torchrun escalates to SIGKILL by itself when workers do not stop)."""

    def __init__(self, distributed: bool = False):
        self.distributed = distributed
        self.signal: int | None = None
        self._previous = {}

    def _note(self, signum, frame):
        self.signal = self.signal or signum  # keep the first one
        if not self.distributed:
            signal.signal(signum, signal.SIG_DFL)

    def __enter__(self) -> "StopRequest":
        self._previous = _install(self._note)
        return self

    def __exit__(self, *exc):
        _restore(self._previous)
        return False

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def interrupted(self, where: str) -> Interrupted:
        signum = self.signal or signal.SIGINT
        return Interrupted(f"{signal.Signals(signum).name} received at {where}.", 128 + signum)
