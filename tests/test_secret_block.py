from __future__ import annotations

import pytest
from prefect.blocks.system import Secret

from integrations.settings import Settings
from tasks.fetch import MissingApiKey, resolve_api_key
from tasks.run_config import RunConfig

KEY = "rk_test_from_a_prefect_secret_block_123"


def test_the_key_comes_from_a_prefect_secret_block_when_the_environment_has_none(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Secret(value=KEY).save("meter-recon-stripe-key", overwrite=True)
    monkeypatch.setenv("METER_RECON_STRIPE_SECRET_BLOCK", "meter-recon-stripe-key")
    assert resolve_api_key(RunConfig.of(Settings())).get_secret_value() == KEY


def test_the_environment_key_wins_over_the_block(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_env")
    monkeypatch.setenv("METER_RECON_STRIPE_SECRET_BLOCK", "meter-recon-stripe-key")
    assert resolve_api_key(RunConfig.of(Settings())).get_secret_value() == "sk_test_env"


def test_no_key_anywhere_is_a_clear_error() -> None:
    with pytest.raises(MissingApiKey, match="STRIPE_API_KEY"):
        resolve_api_key(RunConfig.of(Settings()))
