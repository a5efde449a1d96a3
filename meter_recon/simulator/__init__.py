"""A wire-exact simulator of Stripe's billing meter endpoints, for tests, demos and benchmarks."""

from meter_recon.simulator.app import SimulatorApp
from meter_recon.simulator.data import (
    Bucket,
    MeterRecord,
    SimulatorData,
    SimulatorDataError,
    summary_id,
)
from meter_recon.simulator.faults import FAULT_KINDS, Fault, FaultInjector
from meter_recon.simulator.server import StripeSimulator
from meter_recon.simulator.state import SimulatorState
from meter_recon.simulator.stats import SimulatorStats, max_in_window

__all__ = [
    "FAULT_KINDS",
    "Bucket",
    "Fault",
    "FaultInjector",
    "MeterRecord",
    "SimulatorApp",
    "SimulatorData",
    "SimulatorDataError",
    "SimulatorState",
    "SimulatorStats",
    "StripeSimulator",
    "max_in_window",
    "summary_id",
]
