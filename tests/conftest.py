from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Tests never read the developer's .env or real Stripe settings.
for _name in list(os.environ):
    if _name.startswith("METER_RECON_") and _name != "METER_RECON_TEST_POSTGRES_URL":
        del os.environ[_name]
os.environ.pop("STRIPE_API_KEY", None)
os.environ.pop("STRIPE_API_BASE", None)

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.stripe",
    "tests.fixtures.prefect",
    "tests.fixtures.alerts",
]


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Each test starts in an empty directory and reads the settings afresh.

    Product code never writes the environment (tests/test_config_travel.py); a test sets
    its own with `monkeypatch`, undone after it, and the cached settings must not outlive it.
    """
    from integrations.settings import get_settings

    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
