"""The one base of every error whose message is meant for a person, not a traceback.

It lives in `models/` because `models` imports nothing else of ours, yet its own refusals
(an unknown discrepancy id, one already resolved) are such errors; `meter_recon.errors`
re-exports it for everyone above.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can act on; the message is one sentence for them, no traceback.

    The command line catches this base once, prints the sentence and maps it to an exit code.
    """
