"""Shared pieces of the command-line tools (demo, eval, train)."""

from __future__ import annotations

import sys

from ..modeling.clip import WeightsUnavailableError

#: Errors that come from what the user typed or has on disk: shown as one line, no traceback.
USER_ERRORS = (WeightsUnavailableError, KeyError, FileNotFoundError, ValueError)


def user_error_message(err: BaseException) -> str:
    """The one line to show for a user error.

    The config system re-raises errors with the config node's path and chains the original;
    a weights error is shown as its original sentence, a ``KeyError`` without its quotes.
    """
    if isinstance(err, WeightsUnavailableError) and isinstance(
        err.__cause__, WeightsUnavailableError
    ):
        err = err.__cause__
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)


def report_user_error(err: BaseException) -> int:
    """Print ``error: <message>`` to stderr and return the exit code 2."""
    print(f"error: {user_error_message(err)}", file=sys.stderr)
    return 2
