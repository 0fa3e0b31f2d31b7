"""User-facing errors: one clear line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import os
import sys


class UserError(Exception):
    """A problem the user can fix (bad option, missing data, unwritable folder)."""

    exit_code = 2


class DivergenceError(Exception):
    """Training produced a NaN or infinite loss."""

    exit_code = 3


def exits_cleanly(main):
    """Decorator for a script's main(): our exceptions -> one line on stderr + their exit code."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (UserError, DivergenceError) as err:
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank raises the same
                print(f"error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
        except Interrupted as err:
            print(str(err), file=sys.stderr)
            sys.exit(err.exit_code)

    return wrapper


class Interrupted(Exception):
    """SIGINT/SIGTERM during training: a resumable checkpoint was written."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
