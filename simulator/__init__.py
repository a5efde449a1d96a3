"""A wire-exact simulator of Stripe's billing meter endpoints and the billing side
(subscriptions, subscription items, prices, meter event adjustments, invoices), for tests,
demos and benchmarks."""

from simulator.app import SimulatorApp
from simulator.billing import (
    ItemRecord,
    PriceRecord,
    SubscriptionRecord,
    Tier,
    TransformQuantity,
)
from simulator.data import (
    Bucket,
    MeterRecord,
    SimulatorData,
    SimulatorDataError,
    summary_id,
)
from simulator.faults import (
    ANY_ENDPOINT,
    FAULT_KINDS,
    FAULTABLE_ENDPOINTS,
    Fault,
    FaultInjector,
)
from simulator.invoices import InvoiceLineRecord, InvoiceRecord
from simulator.server import StripeSimulator
from simulator.state import SimulatorState
from simulator.stats import SimulatorStats, max_in_window

__all__ = [
    "ANY_ENDPOINT",
    "FAULTABLE_ENDPOINTS",
    "FAULT_KINDS",
    "Bucket",
    "Fault",
    "FaultInjector",
    "InvoiceLineRecord",
    "InvoiceRecord",
    "ItemRecord",
    "MeterRecord",
    "PriceRecord",
    "SimulatorApp",
    "SimulatorData",
    "SimulatorDataError",
    "SimulatorState",
    "SimulatorStats",
    "StripeSimulator",
    "SubscriptionRecord",
    "Tier",
    "TransformQuantity",
    "max_in_window",
    "summary_id",
]
