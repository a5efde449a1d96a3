"""Errors raised by the Stripe client; their text never carries an API key."""

from __future__ import annotations

from integrations.stripe.redaction import redact


class StripeError(Exception):
    """Anything that went wrong talking to Stripe.

    `status` is the HTTP status (None when no response arrived), `type`/`code`/`param` come
    from Stripe's error body, `request_id` from its `Request-Id` header, and `should_retry`
    tells whether the failure was considered transient.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        should_retry: bool = False,
    ) -> None:
        self.message = redact(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.should_retry = should_retry
        super().__init__(self.message)

    def __str__(self) -> str:
        details = [
            f"{name} {value}"
            for name, value in (
                ("status", self.status),
                ("code", self.code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, status={self.status!r}, "
            f"code={self.code!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Pickles (Prefect task results, Dask) carry the redacted fields only.
        return (
            _rebuild,
            (
                type(self),
                self.message,
                self.status,
                self.type,
                self.code,
                self.param,
                self.request_id,
                self.should_retry,
            ),
        )


def _rebuild(
    cls: type[StripeError],
    message: str,
    status: int | None,
    error_type: str | None,
    code: str | None,
    param: str | None,
    request_id: str | None,
    should_retry: bool,
) -> StripeError:
    return cls(
        message,
        status=status,
        type=error_type,
        code=code,
        param=param,
        request_id=request_id,
        should_retry=should_retry,
    )


class StripeAPIError(StripeError):
    """Stripe answered with an HTTP error status."""


class AuthenticationError(StripeAPIError):
    """401: the key is missing, malformed or unknown."""


class NotFoundError(StripeAPIError):
    """404: no such meter (or route)."""


class RateLimitError(StripeAPIError):
    """429: too many requests, still so after every retry."""


class StripeConnectionError(StripeError):
    """No usable response: network error, timeout, or a malformed body, after every retry."""


def api_error_class(status: int) -> type[StripeAPIError]:
    """The exception class for an HTTP error status."""
    if status == 401:
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 429:
        return RateLimitError
    return StripeAPIError
