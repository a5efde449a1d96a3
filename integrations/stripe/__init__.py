"""Stripe access: a rate-limited, retrying client for the billing meter endpoints, subscriptions,
prices and invoices."""

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
    Invoice,
    InvoiceLine,
    Malformed,
    Meter,
    Subscription,
    SubscriptionItem,
    UsageTotal,
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
    "Invoice",
    "InvoiceLine",
    "Malformed",
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
    "UsageTotal",
    "shared_rate_limiter",
]
