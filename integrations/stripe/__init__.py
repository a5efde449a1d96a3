"""Stripe access: a rate-limited, retrying client for the billing meter endpoints, subscriptions
and prices."""

from integrations.stripe.client import STRIPE_VERSION, StripeClient
from integrations.stripe.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    StripeAPIError,
    StripeConnectionError,
    StripeError,
)
from integrations.stripe.models import (
    DailyUsage,
    EventSummary,
    HourlyUsage,
    Meter,
    Subscription,
    SubscriptionItem,
)
from integrations.stripe.rate_limit import (
    RateLimiter,
    SlidingWindowRateLimiter,
    shared_rate_limiter,
)

__all__ = [
    "STRIPE_VERSION",
    "AuthenticationError",
    "DailyUsage",
    "EventSummary",
    "HourlyUsage",
    "Meter",
    "NotFoundError",
    "RateLimitError",
    "RateLimiter",
    "SlidingWindowRateLimiter",
    "StripeAPIError",
    "StripeClient",
    "StripeConnectionError",
    "StripeError",
    "Subscription",
    "SubscriptionItem",
    "shared_rate_limiter",
]
