"""How a script ends: the exceptions that end it, each with its documented exit code, and the
signals that stop it (SIGINT, SIGTERM, SIGHUP alike, from its first line to its last). The
exceptions carry values (the setting concerned, the path, the rate, the checkpoint) and
common.run words them for a person.

  2    bad input: an option, a path, the data, a checkpoint that does not fit
  3    training diverged (NaN or infinite loss); the best checkpoint is kept
  4    an output could not be written (disk full, folder turned read-only); older files are intact
  128+N  signal N: 130 SIGINT (Ctrl-C), 143 SIGTERM, 129 SIGHUP (the terminal closed), 152
       SIGXCPU, 138/140 SIGUSR1/SIGUSR2 (batch systems' warnings): a run in training writes a
       checkpoint first
  141  the output pipe closed (e.g. `| head`): files are written before anything is printed
Bugs still raise."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
from dataclasses import dataclass


class UserError(Exception):
    """A problem the user can fix. `setting` names the run setting it concerns ("data_dir",
    "output_dir", "resume", "lr", "batch_size", ...), `value` the value it had: the command
    line words them as the option a person typed."""

    exit_code = 2

    def __init__(self, message: str, *, setting: str | None = None, value=None):
        super().__init__(message)
        self.message, self.setting, self.value = message, setting, value


class MissingExtra(UserError, ImportError):
    """A feature whose packages are an optional extra of the package (pyproject.toml's
    [project.optional-dependencies]) was asked for without them: a UserError (one line, exit 2,
    on the command line) that is also an ImportError, as Python callers expect of a missing
    package. `extra`: the extra's name, `module`: the first of its modules not found."""

    def __init__(self, feature: str, extra: str, module: str):
        super().__init__(f"{feature} needs {module}, which is not installed: pip install "
                         f"'cifar10-tasks[{extra}]' (in the clone: pip install -e '.[{extra}]' "
                         "or pip install -r requirements.txt)")
        self.name, self.extra, self.module = module, extra, module


def require_extra(feature: str, extra: str, *modules: str):
    """MissingExtra unless every module of `extra` can be imported; looked up, not imported, so
    that asking costs nothing (importlib's finder, which also sees a module set to None)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken entry
            found = False
        if not found:
            raise MissingExtra(feature, extra, module)


class OutputError(Exception):
    """A result, checkpoint or figure could not be written (the disk said no)."""

    exit_code = 4

    def __init__(self, path, reason: str):
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = path, reason


class DivergenceError(Exception):
    """Training produced a NaN or infinite loss. `lr` is the rate in effect, `checkpoint` a
    resumable checkpoint whose weights are sound (the best check's), when there is one."""

    exit_code = 3

    def __init__(self, what: str, value: float, where: str, *, lr: float | None = None,
                 checkpoint=None):
        super().__init__(f"the {what} became {value} at {where}")
        self.what, self.value, self.where = what, value, where
        self.lr, self.checkpoint = lr, checkpoint


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: the script stops; what it finished is on disk. A BaseException, as
    KeyboardInterrupt is, so that no handler meant for errors catches it. `checkpoint`: the
    one just written, when a training loop was stopped; `result`: the run's metrics, when it
    came after the last step and the run finished anyway (written, nothing left to stop)."""

    def __init__(self, signum: int, where: str | None = None, checkpoint=None,
                 result: dict | None = None):
        self.signum, self.where, self.checkpoint, self.result = signum, where, checkpoint, result
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received at {where}" if where else f"{name} received")


# ---------------------------------------------------------------- signals
# This module imports nothing heavy: a program calls while_starting(__name__) before it imports
# torch, so that a Ctrl-C in those first seconds is one line, not a traceback.

# Every signal whose default would end the script without a word: Ctrl-C, kill, a closed
# terminal, and what batch systems send before their limits (SIGXCPU at a CPU-time limit;
# SIGUSR1/SIGUSR2, e.g. Slurm's --signal). SIGQUIT (Ctrl-\) keeps its core dump: it asks for one.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGXCPU, signal.SIGUSR1,
           signal.SIGUSR2)


def _install(handler) -> dict:
    """`handler` for SIGNALS; the handlers it replaced."""
    previous = {}
    for sig in SIGNALS:
        # nohup starts a program with SIGHUP ignored so that it outlives the terminal: keep that
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
            previous[sig] = signal.signal(sig, handler)
    return previous


def _leave_hung_up_terminal(signum: int):
    """SIGHUP usually means the terminal is gone, and a write to it fails (EIO): send what the
    script still prints to /dev/null rather than fail before its checkpoint is written."""
    if signum != signal.SIGHUP:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or replaced stream
            if stream.isatty():
                os.dup2(devnull, stream.fileno())
    os.close(devnull)


# ---------------------------------------------------------------- before and after main()

_phase = {"text": "start-up, before anything was written"}


def _exit_at_once(signum, frame):
    # the interpreter may be inside an import: leave without unwinding it
    _leave_hung_up_terminal(signum)
    line = f"{signal.Signals(signum).name} received during {_phase['text']}\n"
    with contextlib.suppress(OSError):
        os.write(2, line.encode(errors="backslashreplace"))
    os._exit(128 + signum)


def while_starting(module_name: str):
    """Called by a program as its first statement: until main() installs its own handlers, and
    again once main() has returned, a signal ends the process at once with one line and its
    exit code. Does nothing when the file is not run as a program (imported, or read by a
    test), so that a library user's handlers are left alone."""
    if module_name == "__main__":
        _install(_exit_at_once)


def after_main():
    """main() returned or raised: a signal kept for its outputs is dropped, and a signal during
    the interpreter's shutdown says that, with its code."""
    _kept.clear()
    if signal.getsignal(signal.SIGINT) is _exit_at_once:
        _phase["text"] = "shut-down; the script had finished and its results are written"


# ---------------------------------------------------------------- while main() runs

def _raise_interrupted(signum, frame):
    _leave_hung_up_terminal(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals(handler=_raise_interrupted):
    """Outside a training loop (decoding data, tables, figures, between runs) a signal raises
    Interrupted where the script is: every write is atomic, so nothing half-written remains.
    (StopRequest gives its own `handler`.) The handlers before are restored after."""
    previous = _install(handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class StopRequest:
    """While entered, a signal is only noted (`signal`): the loop finishes its step, writes a
    checkpoint and stops. A second signal kills at once, except under torchrun, which repeats
    the terminal's Ctrl-C to every worker a moment later (that must not kill a worker while it
    writes its checkpoint; torchrun escalates to SIGKILL by itself when workers do not stop)."""
    distributed: bool = False
    signal: int | None = None

    def _note(self, signum, frame):
        _leave_hung_up_terminal(signum)
        self.signal = self.signal or signum  # keep the first one
        if not self.distributed:
            signal.signal(signum, signal.SIG_DFL)

    def __enter__(self) -> "StopRequest":
        self._handling = handle_signals(self._note)
        self._handling.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handling.__exit__(*exc)

    def interrupted(self, where: str, checkpoint=None, result: dict | None = None) \
            -> Interrupted:
        return Interrupted(self.signal or signal.SIGINT, where, checkpoint, result)


# ---------------------------------------------------------------- a signal kept for later
# A signal that came when nothing was left to stop (a run's last check, its final table): the
# script prints its tables and draws its figures first, then ends with the signal's code, and
# begins no other run. One process runs one script: module state is that script's.

_kept: list[Interrupted] = []


def keep_until_outputs(interrupt: Interrupted):
    """Keep `interrupt` (of a finished run) until raise_kept: the script's outputs are done,
    or another run would begin."""
    _kept[:] = [interrupt]


def raise_kept():
    """Raise the signal keep_until_outputs kept (once), else nothing."""
    if _kept:
        raise _kept.pop()


def forget_kept():
    """A call that ended otherwise (an error, another signal) leaves none behind (a script's
    main(): after_main)."""
    _kept.clear()
