"""The environment a bench child process starts from: this one's, less every setting the
child is given anew (meter-recon's, Prefect's and Stripe's), so no setting of the shell that
ran the bench leaks into a measured run."""

from __future__ import annotations

import os
from collections.abc import Mapping

GIVEN_ANEW = ("METER_RECON_", "PREFECT_", "STRIPE_")


def child_environ(given: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without meter-recon's, Prefect's and Stripe's settings,
    plus `given`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(GIVEN_ANEW)}
    env.update(given)
    return env
