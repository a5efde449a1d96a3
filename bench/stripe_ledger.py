"""What the `stripe` ledger costs a run: its requests by kind, as shares of the run's.

Read after a run with invoices for every pair (`bench.dataset.build(n, invoices=True)`):
the simulator's counts per endpoint (invoice listing, invoice lines, and the `usage_total`
summaries, which ask no grouping window) and the run's own record (invoices listed, line
items compared, open discrepancies per ledger).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import create_engine, text

from bench.dataset import Seeded
from simulator.stats import UNGROUPED_SUMMARIES, SimulatorStats

#: The value of `METER_RECON_LEDGERS` for a run comparing both ledgers.
BOTH_LEDGERS = "internal,stripe"


@dataclass(frozen=True, slots=True)
class LedgerCost:
    """The `stripe` ledger's part of one run: what it read and checked, the requests it took
    at the simulator, and the open discrepancies per ledger against those seeded."""

    invoices_listed: int  # the run's invoice sync (its record's `invoice_sync.invoices`)
    line_items_synced: int
    lines_compared: int  # finalized line items checked (the record's `stripe.compared`)
    lines_matched: int
    lines_off_midnight: int  # seeded: not on 00:00 UTC, one `usage_total` request each
    listing_requests: int  # `GET /v1/invoices`
    lines_requests: int  # `GET /v1/invoices/{id}/lines` (an invoice inlines its first 10)
    invoice_gets: int
    usage_totals: int  # `event_summaries` with no grouping window
    daily_requests: int  # `event_summaries` by day: one per pair, for both ledgers
    sync_failed: bool
    discrepancies: dict[str, int]  # open, per ledger
    expected: dict[str, int]

    @property
    def added(self) -> int:
        """The requests only the `stripe` ledger makes."""
        return self.listing_requests + self.lines_requests + self.invoice_gets + self.usage_totals

    @property
    def per_line(self) -> float:
        """`usage_total` requests per finalized line checked (1 at most, 0 on 00:00 UTC)."""
        return self.usage_totals / self.lines_compared if self.lines_compared else 0.0

    @property
    def per_invoice(self) -> float:
        """Listing and lines requests per listed invoice."""
        reading = self.listing_requests + self.lines_requests + self.invoice_gets
        return reading / self.invoices_listed if self.invoices_listed else 0.0


def read_cost(
    stats: SimulatorStats, *, database_url: str, seeded: Seeded, hourly: int
) -> LedgerCost:
    """The `stripe` ledger's cost in the run just finished (`hourly`: the diagnosis's hourly
    requests, told apart from the daily ones by the bench's own counter)."""
    counts, by_ledger = _read_run(database_url)
    sync: dict[str, Any] = counts.get("invoice_sync") or {}
    compared: dict[str, Any] = counts.get("stripe") or {}
    usage_totals = stats.requests_to(UNGROUPED_SUMMARIES)
    return LedgerCost(
        invoices_listed=int(sync.get("invoices", 0)),
        line_items_synced=int(sync.get("line_items", 0)),
        lines_compared=int(compared.get("compared", 0)),
        lines_matched=int(compared.get("matched", 0)),
        lines_off_midnight=seeded.off_midnight_lines,
        listing_requests=stats.requests_to("invoices_list"),
        lines_requests=stats.requests_to("invoice_lines_list"),
        invoice_gets=stats.requests_to("invoice_get"),
        usage_totals=usage_totals,
        daily_requests=stats.event_summaries - usage_totals - hourly,
        sync_failed=bool(sync.get("failed", True)),
        discrepancies=by_ledger,
        expected={"internal": seeded.expected_discrepancies, "stripe": 0},
    )


def _read_run(database_url: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The last run's counts and its open discrepancies per ledger."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            raw = connection.execute(
                text("SELECT counts FROM reconciliation_run ORDER BY id DESC LIMIT 1")
            ).scalar_one()
            rows = connection.execute(
                text(
                    "SELECT ledger, count(*) FROM discrepancy WHERE status = 'open' GROUP BY ledger"
                )
            ).all()
    finally:
        engine.dispose()
    counts = raw if isinstance(raw, dict) else _json(raw)
    return counts, {"internal": 0, "stripe": 0} | {str(k): int(n) for k, n in rows}


def _json(raw: object) -> dict[str, Any]:
    loaded = json.loads(str(raw))
    return loaded if isinstance(loaded, dict) else {}


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


class CostedRun(Protocol):
    """What the section reads of a measured run (`bench.run.FlowCase` is one)."""

    @property
    def label(self) -> str: ...
    @property
    def pairs(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def wall(self) -> float: ...
    @property
    def bound(self) -> float: ...
    @property
    def ratio(self) -> float: ...
    @property
    def rate_limited(self) -> int: ...
    @property
    def pairs_failed(self) -> int: ...
    @property
    def stripe_cost(self) -> LedgerCost | None: ...


def cost_table(cases: Sequence[CostedRun]) -> list[str]:
    """The section of the report: one row per run that compared the `stripe` ledger."""
    rows = [c for c in cases if c.stripe_cost is not None]
    if not rows:
        return []
    lines = [
        "What the `stripe` ledger costs (both ledgers compared; invoices for every pair: one "
        "closed monthly period, half of them not on 00:00 UTC):",
        "",
        "| case | pairs | requests Q | wall s | Q / R s | ratio | invoices listed "
        "| listing requests (of Q) | lines requests (of Q) | `usage_total` requests (of Q) "
        "| the stripe ledger's requests (of Q) | lines checked (not on 00:00) "
        "| requests per line checked | requests per listed invoice "
        "| 429s answered (retried) / pairs failed | discrepancies internal (expected) "
        "| discrepancies stripe (expected) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        cost = c.stripe_cost
        assert cost is not None
        q = c.requests
        lines.append(
            f"| {c.label} | {c.pairs:,} | {q:,} | {c.wall:.1f} | {c.bound:.1f} | {c.ratio:.3f} "
            f"| {cost.invoices_listed:,} | {_share(cost.listing_requests, q)} "
            f"| {_share(cost.lines_requests, q)} | {_share(cost.usage_totals, q)} "
            f"| {_share(cost.added, q)} "
            f"| {cost.lines_compared:,} ({cost.lines_off_midnight:,}) | {cost.per_line:.3f} "
            f"| {cost.per_invoice:.3f} | {c.rate_limited} / {c.pairs_failed} "
            f"| {cost.discrepancies['internal']:,} ({cost.expected['internal']:,}) "
            f"| {cost.discrepancies['stripe']:,} ({cost.expected['stripe']:,}) |"
        )
    lines += ["", *[cost_note(c) for c in rows]]
    return lines


def cost_note(case: CostedRun) -> str:
    """One line per run: the invoice sync, and the daily fetch both ledgers share."""
    cost = case.stripe_cost
    assert cost is not None
    return (
        f"- {case.label}, {case.pairs:,} pairs: the invoice sync read {cost.invoices_listed:,} "
        f"invoices ({cost.line_items_synced:,} metered line items) in "
        f"{cost.listing_requests + cost.lines_requests + cost.invoice_gets:,} requests "
        f"({'failed' if cost.sync_failed else 'no failure'}; an invoice inlines its first 10 "
        "lines, so lines are requested only beyond them); "
        f"{cost.lines_matched:,} of {cost.lines_compared:,} lines matched; one daily fetch a "
        f"pair serves both ledgers ({cost.daily_requests:,} daily requests); request counts "
        "include the attempts answered 429 and retried"
    )
