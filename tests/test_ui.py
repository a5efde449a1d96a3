"""The run summary as finance sees it: Prefect's own UI, in a real headless Chromium.

A real `prefect server start` (its own PREFECT_HOME), the flow run through the CLI against
the simulator (which bills the customers through subscriptions, so the run itself values and
diagnoses what it finds), then the summary artifact's page at 1400 px: its tables stay
inside the content column, each period on one line, and the mermaid chart is drawn (an
`<svg>`). The screenshot is saved next to the test output (UI_SCREENSHOT names another file,
e.g. the README's image).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from flows.windows import utc_today
from models.ledger import import_line_items
from simulator import StripeSimulator
from tasks.report import SUMMARY_KEY
from tests.world import build_world, noon

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1400, 2200

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def backend() -> str:
    """SQLite only: the page is the same on PostgreSQL, and CI's budget is minutes."""
    return "sqlite"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "METER_RECON_", "STRIPE_"))
    }
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server with its UI on a free port; its URL (the API is at /api)."""
    port = _free_port()
    home = tmp_path_factory.mktemp("prefect-home")
    prefect = Path(sys.executable).with_name("prefect")
    log = (home / "server.log").open("w")
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--no-services", "--host=127.0.0.1", f"--port={port}"],
        # The UI asks its API at this address (else it would try the default port).
        env=_clean_env(PREFECT_HOME=str(home), PREFECT_UI_API_URL=f"{url}/api"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "Prefect's server did not start in 90 s"
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _bill_through_stripe(simulator: StripeSimulator, engine: Engine, directory: Path) -> None:
    """Prices and subscriptions for the world's customers, so the run values what it finds,
    and one customer whose usage Stripe counted twice, so it finds a likely cause too."""
    simulator.add_price(
        id="price_api",
        currency="usd",
        meter="mtr_api",
        billing_scheme="per_unit",
        unit_amount_decimal="5",
    )
    simulator.add_price(
        id="price_jobs",
        currency="eur",
        meter="mtr_jobs",
        billing_scheme="per_unit",
        unit_amount_decimal="125000",
    )
    api_customers = ("cus_match", "cus_mismatch", "cus_missing", "cus_unbilled", "cus_dup")
    for n, (customer, price) in enumerate(
        [*((c, "price_api") for c in api_customers), ("cus_jobs", "price_jobs")]
    ):
        simulator.add_subscription(
            id=f"sub_ui_{n}",
            customer=customer,
            status="active",
            created=1_759_276_800 + n,
            items=[{"id": f"si_ui_{n}", "price": price}],
        )
    today = utc_today()
    d1, d2 = today - timedelta(days=3), today - timedelta(days=2)
    simulator.add_event("api_call", "cus_dup", noon(d1), "100")
    simulator.add_event("api_call", "cus_dup", noon(d2), "50")
    ledger = directory / "dup.csv"
    ledger.write_text(
        "id,invoice_id,stripe_customer_id,meter_id,period_start,period_end,quantity\n"
        f"li_dup,in_dup,cus_dup,mtr_api,{d1},{today},75\n",
        encoding="utf-8",
    )
    import_line_items(engine=engine, path=ledger)


def _run_flow(*, ui_server: str, simulator: StripeSimulator, database_url: str) -> None:
    cli = Path(sys.executable).with_name("meter-recon")
    env = _clean_env(
        PREFECT_API_URL=f"{ui_server}/api",
        STRIPE_API_KEY="sk_test_ui_browser",
        STRIPE_API_BASE=simulator.url,
        METER_RECON_DATABASE_URL=database_url,
    )
    done = subprocess.run(
        [str(cli), "nightly"], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _latest_summary_artifact(ui_server: str) -> dict[str, Any]:
    response = httpx.post(
        f"{ui_server}/api/artifacts/filter",
        json={"artifacts": {"key": {"any_": [SUMMARY_KEY]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=10,
    )
    response.raise_for_status()
    [artifact] = response.json()
    return dict(artifact)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


# Per table and chart of the rendered markdown (the heading's container is the content
# column): its right edge, the column's, and for tables how many lines the tallest period
# cell takes (a period must not wrap).
LAYOUT_JS = """
const column = [...document.querySelectorAll('h1')]
  .find(h => h.textContent.includes('meter-recon run')).parentElement;
const edge = column.getBoundingClientRect().right;
const lines = td => {
  const range = document.createRange();
  range.selectNodeContents(td);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
};
return [...column.querySelectorAll('table, svg')].map(e => ({
  what: e.tagName + ' ' + (e.innerText || e.id || '').slice(0, 60),
  right: e.getBoundingClientRect().right,
  column: edge,
  overflow: column.scrollWidth - column.clientWidth,
  periodLines: Math.max(0, ...[...e.querySelectorAll('td')]
    .filter(td => td.textContent.includes('→')).map(lines)),
}));
"""


CHART = "[id^='mermaid'] svg, svg[id^='mermaid']"


def _fit_window_to_content(browser: Any) -> None:
    """Tall enough for the whole artifact (the UI scrolls its main column, not the page)."""
    height = browser.execute_script(
        "return Math.max(...[...document.querySelectorAll('*')].map(e => e.scrollHeight));"
    )
    browser.set_window_size(WIDTH, min(int(height) + 200, 8000))


def _drawn(browser: Any) -> bool:
    from selenium.webdriver.common.by import By

    return bool(
        browser.find_elements(By.CSS_SELECTOR, "table")
        and browser.find_elements(By.CSS_SELECTOR, CHART)
    )


def test_the_run_summary_reads_well_in_prefects_ui(
    ui_server: str,
    simulator: StripeSimulator,
    database_url: str,
    engine: Engine,
    tmp_path: Path,
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    build_world(simulator, engine, tmp_path)
    _bill_through_stripe(simulator, engine, tmp_path)
    _run_flow(ui_server=ui_server, simulator=simulator, database_url=database_url)
    artifact = _latest_summary_artifact(ui_server)
    assert "```mermaid" in artifact["data"]

    browser = _browser()
    try:
        browser.get(f"{ui_server}/v2/artifacts/artifact/{artifact['id']}")
        try:
            WebDriverWait(browser, 30).until(_drawn)
        except TimeoutException:
            browser.save_screenshot(str(tmp_path / "timeout.png"))
            (tmp_path / "timeout.html").write_text(browser.page_source, encoding="utf-8")
            raise
        time.sleep(0.5)  # let the chart finish laying out before the picture
        _fit_window_to_content(browser)
        screenshot = Path(os.environ.get("UI_SCREENSHOT") or tmp_path / "summary.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(tmp_path / "summary.png"))
        if screenshot != tmp_path / "summary.png":
            shutil.copyfile(tmp_path / "summary.png", screenshot)
        print(f"screenshot: {screenshot}")

        text = browser.find_element(By.TAG_NAME, "body").text
        assert "Money at stake" in text
        assert re.search(r"Top \d+ by amount at stake", text)
        top = next(
            t for t in browser.find_elements(By.TAG_NAME, "table") if "customer / meter" in t.text
        )
        # Valued at the Stripe price by the run itself: 1 job at 1,250 eur, 75 calls at 5 cents.
        assert "1,250.00" in top.text and "eur" in top.text
        assert "cus_dup / mtr_api" in top.text and "duplicated usage" in top.text
        assert "3.75" in top.text
        charts = browser.find_elements(By.CSS_SELECTOR, CHART)
        assert charts, "the mermaid chart was not drawn"
        assert any(c.find_elements(By.CSS_SELECTOR, "rect") for c in charts)
        layout = browser.execute_script(LAYOUT_JS)
        assert len(layout) >= 5, layout  # the tables and at least one chart
        for element in layout:
            assert element["right"] <= element["column"] + 1, element
            assert element["overflow"] <= 1, element
            assert element["periodLines"] <= 1, element
    finally:
        browser.quit()
