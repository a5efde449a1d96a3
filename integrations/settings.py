"""Every setting meter-recon reads, from the environment or a `.env` file."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.errors import UserError

DEFAULT_DATABASE_URL = "sqlite:///meter_recon.db"
#: The ledgers a run can compare, in the order `METER_RECON_LEDGERS` defaults to.
LEDGERS = ("internal", "stripe")


class TaskRunnerKind(StrEnum):
    THREADS = "threads"
    DASK = "dask"


class LedgerQueryUnreadable(UserError):
    """METER_RECON_LEDGER_QUERY names a file (`@path`) that cannot be read."""


def read_ledger_query(value: str | None) -> str | None:
    """The ledger query's SQL: `value` itself, or the file it names after `@`; None unset."""
    value = (value or "").strip()
    if not value:
        return None
    if not value.startswith("@"):
        return value
    path = Path(value[1:].strip()).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        message = f"The ledger query file {path} cannot be read: {reason}."
        raise LedgerQueryUnreadable(message) from None
    if not text.strip():
        raise LedgerQueryUnreadable(f"The ledger query file {path} is empty.")
    return text


class Settings(BaseSettings):
    """One place for configuration; `STRIPE_*` keep Stripe's own names, the rest are prefixed."""

    model_config = SettingsConfigDict(
        env_prefix="METER_RECON_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    stripe_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("STRIPE_API_KEY", "stripe_api_key")
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com",
        validation_alias=AliasChoices("STRIPE_API_BASE", "stripe_api_base"),
    )
    stripe_secret_block: str | None = Field(
        default=None,
        description="A Prefect Secret block holding the key, used when STRIPE_API_KEY is unset.",
    )

    database_url: str = DEFAULT_DATABASE_URL
    alert_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    abs_tol: Decimal = Decimal("0.000001")
    rel_tol: Decimal = Decimal(0)
    lookback_days: int = Field(default=3, ge=1, le=35)
    max_requests_per_second: float = Field(default=20.0, gt=0)
    max_workers: int = Field(default=16, ge=1, le=256)
    task_runner: TaskRunnerKind = TaskRunnerKind.THREADS
    dask_address: str | None = None
    pairs_per_task: int = Field(default=1, ge=1, le=1000)
    stale_after_seconds: int = Field(default=120, ge=1)
    discover_pairs: bool = Field(
        default=True,
        description="Learn the billed pairs and their prices from Stripe's subscriptions first.",
    )
    diagnose: bool = Field(
        default=True,
        description="Ask Stripe for hourly usage around a line item's boundaries (time zones).",
    )
    settle_hours: int = Field(
        default=0,
        ge=0,
        le=24 * 35,
        description="Hours after a period ends before its new discrepancies are alerted.",
    )
    ledgers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=LEDGERS,
        description="The ledgers a run compares, comma-separated: internal, stripe.",
    )
    ledger_query: str | None = Field(
        default=None,
        description=(
            "SQL returning the internal ledger's line items (columns by name), or @path to a "
            "file holding it; set, every run syncs the ledger from it first."
        ),
    )
    ledger_database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL the ledger query runs on; default meter-recon's own database.",
        repr=False,
    )
    early_prefect_server: bool = Field(
        default=True,
        description=(
            "Without PREFECT_API_URL, start Prefect's embedded server as the command starts, "
            "while it imports; false leaves it to Prefect (started on its first API call)."
        ),
    )

    @property
    def ledger_source_url(self) -> str:
        """Where the ledger query runs: its own URL, else meter-recon's database."""
        return self.ledger_database_url or self.database_url

    def ledger_query_text(self) -> str | None:
        """The ledger query's SQL (the setting, or the file it names after `@`); None unset."""
        return read_ledger_query(self.ledger_query)

    @field_validator("alert_urls", mode="before")
    @classmethod
    def _split_alert_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("ledgers", mode="before")
    @classmethod
    def _split_ledgers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("ledgers")
    @classmethod
    def _known_ledgers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in LEDGERS]
        if unknown:
            raise ValueError(f"unknown ledger(s) {', '.join(unknown)}; use {', '.join(LEDGERS)}")
        if not value:
            raise ValueError(f"name at least one ledger: {', '.join(LEDGERS)}")
        return tuple(dict.fromkeys(value))

    @field_validator("abs_tol", "rel_tol")
    @classmethod
    def _non_negative(cls, value: Decimal) -> Decimal:
        if value < 0:
            raise ValueError("tolerances cannot be negative")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
