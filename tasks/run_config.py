"""A run's configuration, read from the settings once as the run starts and handed down.

The flow's entry (or the command that starts it) reads `Settings` once and freezes what the
run's tasks need into a `RunConfig`; every task and helper takes it, or the values it needs,
as arguments. So a run keeps one configuration from start to end, on threads and on Dask
workers alike (it pickles), and the run's record says what it was (`recorded`, secrets out).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from integrations.settings import Settings, TaskRunnerKind
from models.engine import redact_url
from tasks.compare import Tolerance

#: Worker processes of the Dask `LocalCluster` a run starts when no `dask_address` is given.
LOCAL_CLUSTER_WORKERS = 2


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything a run's tasks read from the settings; frozen, picklable, secrets masked.

    The database URL (it may hold a password), the Stripe key and the alert URLs (they may
    hold tokens) are `SecretStr`: masked in reprs, logs and Prefect's stored parameters.
    `pairs_per_task` is None when the setting was not given (chosen per run by its size).
    """

    database_url: SecretStr
    stripe_api_key: SecretStr | None = field(default=None, repr=False)
    stripe_secret_block: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    alert_urls: tuple[SecretStr, ...] = field(default=(), repr=False)
    abs_tol: Decimal = Decimal("0.000001")
    rel_tol: Decimal = Decimal(0)
    settle_hours: int = 0
    diagnose: bool = True
    discover_pairs: bool = True
    lookback_days: int = 3
    max_requests_per_second: float = 20.0
    task_runner: TaskRunnerKind = TaskRunnerKind.THREADS
    dask_address: str | None = None
    max_workers: int = 16
    pairs_per_task: int | None = None
    stale_after_seconds: int = 120
    ledgers: tuple[str, ...] = ("internal", "stripe")
    ledger_query: str | None = None  # the setting as given: SQL, or @path to a file of it
    ledger_database_url: SecretStr | None = field(default=None, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> RunConfig:
        """The run's part of `settings`, frozen."""
        return cls(
            database_url=SecretStr(settings.database_url),
            stripe_api_key=settings.stripe_api_key,
            stripe_secret_block=settings.stripe_secret_block,
            stripe_api_base=settings.stripe_api_base,
            alert_urls=tuple(SecretStr(url) for url in settings.alert_urls),
            abs_tol=settings.abs_tol,
            rel_tol=settings.rel_tol,
            settle_hours=settings.settle_hours,
            diagnose=settings.diagnose,
            discover_pairs=settings.discover_pairs,
            lookback_days=settings.lookback_days,
            max_requests_per_second=settings.max_requests_per_second,
            task_runner=settings.task_runner,
            dask_address=settings.dask_address,
            max_workers=settings.max_workers,
            pairs_per_task=(
                settings.pairs_per_task if "pairs_per_task" in settings.model_fields_set else None
            ),
            stale_after_seconds=settings.stale_after_seconds,
            ledgers=settings.ledgers,
            ledger_query=settings.ledger_query,
            ledger_database_url=(
                None
                if settings.ledger_database_url is None
                else SecretStr(settings.ledger_database_url)
            ),
        )

    def using_database(self, url: SecretStr | str | None) -> RunConfig:
        """This configuration on another database (None: this one)."""
        if url is None:
            return self
        return replace(self, database_url=url if isinstance(url, SecretStr) else SecretStr(url))

    @property
    def database(self) -> str:
        """The database URL to connect with (never to log: `recorded` redacts it)."""
        return self.database_url.get_secret_value()

    @property
    def alert_targets(self) -> list[str]:
        """The alert URLs to send to (never to log)."""
        return [url.get_secret_value() for url in self.alert_urls]

    @property
    def tolerance(self) -> Tolerance:
        return Tolerance(self.abs_tol, self.rel_tol)

    @property
    def ledger_source(self) -> str:
        """Where the ledger query runs: its own URL, else meter-recon's database."""
        if self.ledger_database_url is None:
            return self.database
        return self.ledger_database_url.get_secret_value()

    def recorded(self) -> dict[str, Any]:
        """What the run's record keeps: JSON values, no secret (the URL's password masked,
        the alert URLs counted, the Stripe key left out)."""
        return {
            "database_url": redact_url(self.database),
            "stripe_api_base": self.stripe_api_base,
            "stripe_secret_block": self.stripe_secret_block,
            "alert_urls": len(self.alert_urls),
            "abs_tol": str(self.abs_tol),
            "rel_tol": str(self.rel_tol),
            "settle_hours": self.settle_hours,
            "diagnose": self.diagnose,
            "discover_pairs": self.discover_pairs,
            "lookback_days": self.lookback_days,
            "max_requests_per_second": self.max_requests_per_second,
            "task_runner": self.task_runner.value,
            "dask_address": self.dask_address,
            "max_workers": self.max_workers,
            "pairs_per_task": self.pairs_per_task,
            "stale_after_seconds": self.stale_after_seconds,
            "ledgers": list(self.ledgers),
            "ledger_query": self.ledger_query,
            "ledger_database_url": redact_url(self.ledger_source),
        }
