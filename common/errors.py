"""How a script ends when something goes wrong: one line on stderr and a documented exit code,
never a traceback.

  2    bad input: an option, a path, the data, a checkpoint that does not fit
  3    training diverged (NaN or infinite loss); the last good checkpoint is kept
  4    an output could not be written (disk full, folder turned read-only); older files are intact
  130  SIGINT (Ctrl-C), 143 SIGTERM: a run in training writes a checkpoint first
  141  the output pipe closed (e.g. `| head`): files are written before anything is printed
Bugs still raise."""
from __future__ import annotations

import functools
import os
import signal
import sys


class UserError(Exception):
    """A problem the user can fix (bad option, missing data, unwritable folder)."""

    exit_code = 2


class DivergenceError(Exception):
    """Training produced a NaN or infinite loss."""

    exit_code = 3


class OutputError(Exception):
    """A result, checkpoint or figure could not be written (the disk said no)."""

    exit_code = 4


class Interrupted(Exception):
    """SIGINT or SIGTERM: the script stops; what it finished is on disk."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def exits_cleanly(main):
    """Decorator for a script's main(): our exceptions -> one line on stderr + their exit code."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from .rundir import FolderLock  # imported here: both modules need this one
        from .signals import signals_raise_interrupted
        try:
            with signals_raise_interrupted():
                try:
                    return main(*args, **kwargs)
                finally:
                    FolderLock.release_all()
        except (UserError, DivergenceError, OutputError) as err:
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank raises the same
                print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except (Interrupted, KeyboardInterrupt) as err:
            if isinstance(err, KeyboardInterrupt):  # a signal that arrived before our handler
                err = Interrupted("SIGINT received: stopped", 128 + signal.SIGINT)
            print(str(err), file=sys.stderr)
            sys.exit(err.exit_code)
        except BrokenPipeError:
            # the reader went away (`| head`): say nothing more, on a stdout that cannot fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)

    return wrapper
