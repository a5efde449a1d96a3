"""Floor 2: the outside world: settings, the Stripe client and its rate limits, Prefect's server."""
