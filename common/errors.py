"""The exceptions that end a script, each with its documented exit code; they carry values (the
setting concerned, the path, the rate, the checkpoint) and common.run words them for a person.

  2    bad input: an option, a path, the data, a checkpoint that does not fit
  3    training diverged (NaN or infinite loss); the best checkpoint is kept
  4    an output could not be written (disk full, folder turned read-only); older files are intact
  130  SIGINT (Ctrl-C), 143 SIGTERM: a run in training writes a checkpoint first
  141  the output pipe closed (e.g. `| head`): files are written before anything is printed
Bugs still raise."""
from __future__ import annotations

import signal


class UserError(Exception):
    """A problem the user can fix. `setting` names the run setting it concerns ("data_dir",
    "output_dir", "resume", "lr", "batch_size", ...), `value` the value it had: the command
    line words them as the option a person typed."""

    exit_code = 2

    def __init__(self, message: str, *, setting: str | None = None, value=None):
        super().__init__(message)
        self.message, self.setting, self.value = message, setting, value


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
    """SIGINT or SIGTERM: the script stops; what it finished is on disk. A BaseException, as
    KeyboardInterrupt is, so that no handler meant for errors catches it. `checkpoint`: the
    one just written, when a training loop was stopped."""

    def __init__(self, signum: int, where: str | None = None, checkpoint=None):
        self.signum, self.where, self.checkpoint = signum, where, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"{name} received at {where}" if where else f"{name} received")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
