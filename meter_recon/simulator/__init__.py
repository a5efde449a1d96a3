"""A wire-exact simulator of Stripe's billing meter endpoints and the billing side
(subscriptions, subscription items, prices, meter event adjustments), for tests, demos and
benchmarks."""

from meter_recon.simulator.app import SimulatorApp
from meter_recon.simulator.billing import (
    ItemRecord,
    PriceRecord,
    SubscriptionRecord,
    Tier,
    TransformQuantity,
)
from meter_recon.simulator.data import (
    Bucket,
    MeterRecord,
    SimulatorData,
    SimulatorDataError,
    summary_id,
)
from meter_recon.simulator.faults import (
    ANY_ENDPOINT,
    FAULT_KINDS,
    FAULTABLE_ENDPOINTS,
    Fault,
    FaultInjector,
)
from meter_recon.simulator.server import StripeSimulator
from meter_recon.simulator.state import SimulatorState
from meter_recon.simulator.stats import SimulatorStats, max_in_window

__all__ = [
    "ANY_ENDPOINT",
    "FAULTABLE_ENDPOINTS",
    "FAULT_KINDS",
    "Bucket",
    "Fault",
    "FaultInjector",
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
