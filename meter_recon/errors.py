"""The errors the command line reports as one sentence, and the exit codes it maps them to.

Every such error derives from `UserError`; `meter_recon.cli` catches that base in one place.
Messages raised below the command line speak of the work (a window's start and end), not of
the flags that set it, since deployments and the UI start the same flows with parameters.
"""

from __future__ import annotations

from models.errors import UserError

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_PAIRS_FAILED", "BadInput", "RunFailed", "UserError"]

EXIT_OK = 0
EXIT_PAIRS_FAILED = 1
EXIT_BAD_INPUT = 2


class BadInput(UserError):
    """Bad usage or input found by the command line itself: exit code 2."""


class RunFailed(UserError):
    """The flow itself failed (the message says how, without secrets): exit code 1."""
