"""The simulator's subscription list, one page built at a time, for the bench's large runs.

The simulator builds the wire object of every subscription for each page it serves, then
keeps a page of them: paging through N subscriptions costs O(N^2). At 5,000 subscriptions
that is ~1.5 s a page on 2 cores (discovery's 51 requests took 82 s), at 25,000 it would
take most of an hour, and the bench would time the simulator, not the flow. This builds the
same page from the same filtered, ordered records and turns only the page into wire objects:
the same answer, the same cursors and errors. (The simulator itself should do this:
`meter_recon/simulator/app.py` `_subscriptions_list`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meter_recon.simulator import app, wire
from meter_recon.simulator.billing import SubscriptionRecord


def _subscriptions_list(self: app.SimulatorApp, query: str) -> dict[str, Any]:
    params = app.Params(query, app.SUBSCRIPTION_LIST_PARAMS, app.SUBSCRIPTION_LIST_UNSUPPORTED)
    status = params.choice("status", app.SUBSCRIPTION_STATUS_FILTERS)
    customer, price = params.optional("customer"), params.optional("price")
    collection = params.choice("collection_method", ("charge_automatically", "send_invoice"))
    created = params.created()
    limit = params.limit()
    starting_after, ending_before = params.cursors()
    tiers = params.expands(app.TIERS_EXPANSION["subscriptions_list"])

    def keep(subscription: SubscriptionRecord) -> bool:
        return (
            app._status_matches(subscription.status, status)
            and customer in (None, subscription.customer)
            and (price is None or any(item.price.id == price for item in subscription.items))
            and collection in (None, "charge_automatically")
            and created(subscription.created)
        )

    page, has_more = app.paginate(
        [
            {"id": subscription.id, "record": subscription}
            for subscription in self.state.data.subscriptions()
            if keep(subscription)
        ],
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        object_name="subscription",
    )
    objects = [wire.subscription_object(entry["record"], tiers=tiers) for entry in page]
    return wire.list_object(objects, has_more=has_more, url="/v1/subscriptions")


@contextmanager
def paged_subscription_lists() -> Iterator[None]:
    """While open, every simulator in this process builds one subscription page at a time."""
    original = app.SimulatorApp._subscriptions_list
    app.SimulatorApp._subscriptions_list = _subscriptions_list  # type: ignore[method-assign]
    try:
        yield
    finally:
        app.SimulatorApp._subscriptions_list = original  # type: ignore[method-assign]
