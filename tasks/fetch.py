"""Stripe access for tasks: one client per process; the key from the run's configuration (the
environment's STRIPE_API_KEY) or a Prefect Secret block."""

from __future__ import annotations

import threading
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from integrations.settings import TaskRunnerKind
from integrations.stripe import DailyUsage, HourlyUsage, Meter, RateLimiter, StripeClient
from integrations.stripe.errors import AuthenticationError
from models.errors import UserError
from tasks.run_config import LOCAL_CLUSTER_WORKERS, RunConfig

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import State, TaskRun

_clients: dict[tuple[str, float, str, str], StripeClient] = {}
_lock = threading.Lock()
_limiter_override: RateLimiter | None = None
_client_options: dict[str, Any] = {}


class MissingApiKey(UserError, RuntimeError):
    """No Stripe API key is configured; the message says where to set one."""


def resolve_api_key(config: RunConfig) -> SecretStr:
    """STRIPE_API_KEY, else the Prefect Secret block named by METER_RECON_STRIPE_SECRET_BLOCK."""
    if config.stripe_api_key is not None and config.stripe_api_key.get_secret_value():
        return config.stripe_api_key
    if config.stripe_secret_block:
        from prefect.blocks.system import Secret

        from integrations.prefect_server import wait_until_ready

        wait_until_ready()  # the block is read from Prefect's API
        value = Secret.load(config.stripe_secret_block).get()  # type: ignore[union-attr]
        return SecretStr(str(value))
    raise MissingApiKey("No Stripe API key: set STRIPE_API_KEY or METER_RECON_STRIPE_SECRET_BLOCK.")


class KeyRefused(UserError, RuntimeError):
    """Stripe answered 401 to the configured key: no retry and no other pair can succeed."""


def key_refused(error: object) -> KeyRefused | None:
    """The run-ending sentence for a 401 (never the key itself); None for anything else."""
    if isinstance(error, KeyRefused):
        return error
    if not isinstance(error, AuthenticationError):
        return None
    return refused_key(error)


def refused_key(error: AuthenticationError) -> KeyRefused:
    """`key_refused` of a 401 from Stripe."""
    request = f", request {error.request_id}" if error.request_id else ""
    return KeyRefused(
        f"Stripe refused the API key (401{request}): check STRIPE_API_KEY (or the Prefect "
        "Secret block METER_RECON_STRIPE_SECRET_BLOCK names) holds a valid secret key."
    )


def retry_unless_key_refused(task: Task[Any, Any], task_run: TaskRun, state: State) -> bool:
    """Prefect's retry condition for Stripe tasks: a refused key fails the same way again."""
    return key_refused(state.result(raise_on_failure=False)) is None


def use_rate_limiter(limiter: RateLimiter | None) -> None:
    """Replace the per-process limiter (the Dask runner shares one across processes)."""
    global _limiter_override
    with _lock:
        _limiter_override = limiter
        for client in _clients.values():
            client.close()
        _clients.clear()


def configure_clients(**options: Any) -> None:
    """Extra `StripeClient` options for clients made from now on (tests shorten backoffs)."""
    with _lock:
        _client_options.clear()
        _client_options.update(options)
        for client in _clients.values():
            client.close()
        _clients.clear()


def _rate_limiter(config: RunConfig) -> RateLimiter | None:
    """The override if any; in a worker of the local Dask cluster, the window every process
    of the machine shares (a fixed share of the limit without POSIX file locks); in a worker
    of a cluster elsewhere, the Prefect GCL every worker process shares; else None (the
    client's per-process limiter: the flow's process, which sends nothing while workers do)."""
    if _limiter_override is not None:
        return _limiter_override
    if config.task_runner is not TaskRunnerKind.DASK:
        return None
    index = _local_worker_index(config)
    if index is not None:
        from integrations.stripe.local_share import local_cluster_limiter

        return local_cluster_limiter(
            config.max_requests_per_second, processes=LOCAL_CLUSTER_WORKERS, index=index
        )
    if config.dask_address:
        from integrations.stripe.prefect_limit import shared_prefect_rate_limiter

        return shared_prefect_rate_limiter(config.max_requests_per_second)
    return None


def _local_worker_index(config: RunConfig) -> int | None:
    """This process's number in the run's local cluster (Dask names its workers 0 to n-1);
    None outside one: the flow's own process, or a cluster at `dask_address`."""
    if config.dask_address:
        return None
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) and 0 <= name < LOCAL_CLUSTER_WORKERS else None


def stripe_client(config: RunConfig) -> StripeClient:
    """The process-wide client for this configuration (one connection pool, one rate limit)."""
    key = resolve_api_key(config)
    fingerprint = (
        config.stripe_api_base,
        config.max_requests_per_second,
        str(hash(key.get_secret_value())),
        config.task_runner.value,
    )
    with _lock:
        client = _clients.get(fingerprint)
        if client is None:
            client = _clients[fingerprint] = StripeClient(
                api_key=key,
                api_base=config.stripe_api_base,
                max_requests_per_second=config.max_requests_per_second,
                rate_limiter=_rate_limiter(config),
                **_client_options,
            )
        return client


def close_clients() -> None:
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def fetch_meters(config: RunConfig) -> list[Meter]:
    """Stripe's meters; a refused key raises `KeyRefused`, the sentence that ends the run."""
    try:
        return stripe_client(config).list_meters()
    except AuthenticationError as error:
        raise refused_key(error) from error


def fetch_daily_usage(
    config: RunConfig, *, meter: str, customer: str, start: date, end: date
) -> DailyUsage:
    return stripe_client(config).daily_usage(
        meter_id=meter, customer=customer, start=start, end=end
    )


def fetch_hourly_usage(
    config: RunConfig, *, meter: str, customer: str, start: datetime, end: datetime
) -> HourlyUsage:
    """Hourly buckets over whole UTC hours `[start, end)`, for the time-zone diagnosis."""
    return stripe_client(config).hourly_usage(
        meter_id=meter, customer=customer, start=start, end=end
    )
