from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from integrations.settings import DEFAULT_DATABASE_URL, Settings, TaskRunnerKind

KEY = "sk_test_settings_0123456789abcdef"


def test_defaults_are_a_local_sqlite_file_and_design_values() -> None:
    settings = Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.stripe_api_base == "https://api.stripe.com"
    assert settings.abs_tol == Decimal("0.000001")
    assert settings.rel_tol == Decimal(0)
    assert settings.lookback_days == 3
    assert settings.max_requests_per_second == 20
    assert settings.task_runner is TaskRunnerKind.THREADS
    assert settings.alert_urls == []


def test_environment_variables_are_read_with_their_documented_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:9")
    monkeypatch.setenv("METER_RECON_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("METER_RECON_ALERT_URLS", "json://127.0.0.1:1/a, mailto://x@y")
    monkeypatch.setenv("METER_RECON_ABS_TOL", "0.01")
    monkeypatch.setenv("METER_RECON_REL_TOL", "0.001")
    monkeypatch.setenv("METER_RECON_LOOKBACK_DAYS", "5")
    monkeypatch.setenv("METER_RECON_MAX_REQUESTS_PER_SECOND", "90")
    monkeypatch.setenv("METER_RECON_MAX_WORKERS", "8")
    monkeypatch.setenv("METER_RECON_TASK_RUNNER", "dask")
    monkeypatch.setenv("METER_RECON_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    settings = Settings()
    assert settings.stripe_api_key is not None
    assert settings.stripe_api_key.get_secret_value() == KEY
    assert settings.stripe_api_base == "http://127.0.0.1:9"
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.alert_urls == ["json://127.0.0.1:1/a", "mailto://x@y"]
    assert settings.abs_tol == Decimal("0.01")
    assert settings.rel_tol == Decimal("0.001")
    assert settings.lookback_days == 5
    assert settings.max_requests_per_second == 90
    assert settings.max_workers == 8
    assert settings.task_runner is TaskRunnerKind.DASK
    assert settings.dask_address == "tcp://127.0.0.1:8786"


def test_dotenv_file_in_the_working_directory_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    with open(".env", "w") as env:
        env.write("METER_RECON_LOOKBACK_DAYS=7\nSTRIPE_API_KEY=sk_test_from_dotenv\n")
    settings = Settings()
    assert settings.lookback_days == 7
    assert settings.stripe_api_key is not None


def test_api_key_never_appears_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    settings = Settings()
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert KEY not in settings.model_dump_json()


def test_api_key_never_appears_in_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    monkeypatch.setenv("METER_RECON_MAX_WORKERS", f"not-a-number-{KEY}")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert KEY not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METER_RECON_ABS_TOL", "-1"),
        ("METER_RECON_LOOKBACK_DAYS", "0"),
        ("METER_RECON_MAX_REQUESTS_PER_SECOND", "0"),
        ("METER_RECON_TASK_RUNNER", "processes"),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_discovery_and_diagnosis_are_on_and_nothing_settles_by_default() -> None:
    settings = Settings()
    assert (settings.discover_pairs, settings.diagnose, settings.settle_hours) == (True, True, 0)


def test_discovery_diagnosis_and_settling_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METER_RECON_DISCOVER_PAIRS", "false")
    monkeypatch.setenv("METER_RECON_DIAGNOSE", "false")
    monkeypatch.setenv("METER_RECON_SETTLE_HOURS", "72")
    settings = Settings()
    assert (settings.discover_pairs, settings.diagnose, settings.settle_hours) == (False, False, 72)


def test_a_negative_settling_time_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METER_RECON_SETTLE_HOURS", "-1")
    with pytest.raises(ValidationError):
        Settings()


def test_a_run_compares_the_internal_ledger_with_stripe_by_default() -> None:
    assert Settings().ledgers == ("internal", "stripe")


def test_the_ledgers_are_read_comma_separated_in_the_order_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METER_RECON_LEDGERS", " stripe , internal,stripe")
    assert Settings().ledgers == ("stripe", "internal")


@pytest.mark.parametrize("value", ["internal,netsuite", "", " , "])
def test_only_the_internal_and_stripe_ledgers_are_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("METER_RECON_LEDGERS", value)
    with pytest.raises(ValidationError, match="ledger"):
        Settings()
