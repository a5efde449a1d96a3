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
    """Each test starts in an empty directory with the suite's environment, and leaves it so.

    The CLI sets METER_RECON_DATABASE_URL in the process environment on purpose (workers
    inherit it); a test running the CLI in-process must not pass it on to the next test.
    """
    from integrations.settings import get_settings

    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    get_settings.cache_clear()
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)
    get_settings.cache_clear()
