"""Keep API keys out of messages, logs and exceptions."""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Stripe secret and restricted keys (`sk_test_…`, `rk_live_…`), and whatever follows `Bearer`
# or `Basic` (Stripe's own 401 message can echo the Authorization header).
_KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9])(?:sk|rk)_[A-Za-z0-9_\-*]+")
_AUTH_PATTERN = re.compile(r"\b(Bearer|Basic)\s+[^\s'\"]+", re.IGNORECASE)


def redact(text: str, *secrets: str) -> str:
    """`text` with every key-looking token, auth credential and given secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _AUTH_PATTERN.sub(lambda match: f"{match.group(1)} {REDACTED}", text)
    return _KEY_PATTERN.sub(REDACTED, text)
