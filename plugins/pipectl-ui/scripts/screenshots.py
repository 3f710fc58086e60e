"""The screenshots of pipectl-ui in the docs: docs/images/ui-runs.png (the runs page) and
docs/images/ui-run.png (a run's page).

It builds a small demo project in a temporary folder (a ``pipectl.toml`` and its SQLite
tracker in ``.pipectl/``), runs three pipelines there for real (runs that succeed, a step that
succeeds on its second attempt, a run that fails and the run that resumes it, a secret param),
starts ``pipectl ui --port 0`` in that folder, as a user would, and photographs two pages with
Playwright for Python driving Debian's chromium (/usr/bin/chromium).

Run:  .venv/bin/python plugins/pipectl-ui/scripts/screenshots.py [--out DIR] [--chromium PATH]

``--out``: where the two PNG files go (default: docs/images/ of the repository).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO_ROOT / "docs" / "images"
RUNS_PNG = "ui-runs.png"
RUN_PNG = "ui-run.png"
VIEWPORT = {"width": 1280, "height": 860}


def chromium_executable() -> str | None:
    """Debian's chromium (``chromium`` on PATH, or /usr/bin/chromium), or None."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


# -- the demo project ----------------------------------------------------------------------------


def orders_pipeline(flaky: dict[str, int]) -> Any:
    """Daily orders: extract, clean, a flaky enrichment (its first attempt of the day fails),
    two loads and a report; a secret API token."""
    from pipectl import Pipeline

    pipe = Pipeline("orders_daily", description="the day's orders into the warehouse")
    pipe.param("day", "2026-03-02")
    pipe.param("api_token", "demo-token-not-shown", secret=True)
    log = logging.getLogger("orders_daily")

    @pipe.step("extract_orders")
    def extract_orders(params):
        time.sleep(0.12)
        print(f"fetching orders of {params['day']} with {params['api_token']}", flush=True)
        return [{"id": i, "amount": 10 + i % 7, "city": "Lyon"} for i in range(240)]

    @pipe.step("clean", depends_on=["extract_orders"])
    def clean(extract_orders):
        time.sleep(0.05)
        return [r for r in extract_orders if r["amount"] > 10]

    @pipe.step(
        "enrich_customers",
        depends_on=["clean"],
        retries=2,
        retry_delay=0.1,
        retry_jitter=0,
    )
    def enrich_customers(clean):
        flaky["calls"] += 1
        time.sleep(0.08)
        if flaky["calls"] % 3 == 1:
            log.warning("CRM answered 503, trying again")
            raise ConnectionError("CRM API answered 503 Service Unavailable")
        return [dict(r, segment="retail") for r in clean]

    @pipe.step("load_warehouse", depends_on=["enrich_customers"])
    def load_warehouse(enrich_customers):
        time.sleep(0.15)
        return len(enrich_customers)

    @pipe.step("load_search_index", depends_on=["enrich_customers"])
    def load_search_index(enrich_customers):
        time.sleep(0.09)
        return len(enrich_customers)

    @pipe.step("daily_report", depends_on=["load_warehouse", "load_search_index"])
    def daily_report(load_warehouse, load_search_index):
        time.sleep(0.03)
        print(f"{load_warehouse} orders loaded", flush=True)
        return {"orders": load_warehouse}

    return pipe


def inventory_pipeline(ready: Path) -> Any:
    """Inventory: two fetches (one succeeds on its second attempt), a join and a check that
    fails until ``ready`` exists; the run that fails is then resumed. A secret password."""
    from pipectl import Pipeline

    pipe = Pipeline("inventory_sync", description="stock and prices of every warehouse")
    pipe.param("warehouses", "W1,W2,W7")
    pipe.param("erp_password", "demo-password-not-shown", secret=True)
    calls = {"prices": 0}

    @pipe.step("fetch_stock")
    def fetch_stock(params):
        time.sleep(0.1)
        return [{"sku": f"SKU-{i}", "qty": i % 40} for i in range(120)]

    @pipe.step("fetch_prices", retries=2, retry_delay=0.05, retry_jitter=0)
    def fetch_prices(params):
        calls["prices"] += 1
        time.sleep(0.06)
        if calls["prices"] == 1:
            raise TimeoutError("ERP price service: no answer after 60 ms")
        return {f"SKU-{i}": 2.5 + i % 9 for i in range(120)}

    @pipe.step("join", depends_on=["fetch_stock", "fetch_prices"])
    def join(fetch_stock, fetch_prices):
        time.sleep(0.04)
        return [dict(r, price=fetch_prices[r["sku"]]) for r in fetch_stock]

    @pipe.step("check_totals", depends_on=["join"])
    def check_totals(join):
        time.sleep(0.03)
        if not ready.exists():
            raise ValueError("warehouse W7: stock total 11,204 does not match the ledger (11,310)")
        return sum(r["qty"] for r in join)

    @pipe.step("publish", depends_on=["check_totals"])
    def publish(check_totals):
        time.sleep(0.06)
        return check_totals

    @pipe.step("notify", depends_on=["publish"])
    def notify(publish):
        return "sent"

    return pipe


def weather_pipeline() -> Any:
    from pipectl import Pipeline

    pipe = Pipeline("weather_ingest", description="hourly observations of 40 stations")

    @pipe.step("download")
    def download():
        time.sleep(0.07)
        return list(range(40))

    @pipe.step("parse", depends_on=["download"])
    def parse(download):
        time.sleep(0.03)
        return [{"station": s, "temp": 12.5} for s in download]

    @pipe.step("store", depends_on=["parse"])
    def store(parse):
        time.sleep(0.05)
        return len(parse)

    return pipe


def demo_module(folder: Path) -> Any:
    """The three pipeline builders above, written into ``folder`` as ``demo_pipelines.py``
    and imported from there, so that what the pages show (a traceback's file) names the demo
    project, not this script's place on the machine that made the pictures."""
    import importlib.util
    import inspect

    source = "\n\n".join(
        inspect.getsource(f) for f in (orders_pipeline, inventory_pipeline, weather_pipeline)
    )
    path = folder / "demo_pipelines.py"
    path.write_text(
        "from __future__ import annotations\n\nimport logging\nimport time\n"
        "from pathlib import Path\nfrom typing import Any\n\n\n" + source,
        encoding="utf-8",
    )
    spec = importlib.util.spec_from_file_location("demo_pipelines", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_project(folder: Path) -> dict[str, str]:
    """The demo project in ``folder``: runs into its tracker. Returns the run ids shown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipectl.toml").write_text(
        'tracker = "sqlite:///.pipectl/pipectl.db"\n', encoding="utf-8"
    )
    tracker = f"sqlite:///{folder / '.pipectl' / 'pipectl.db'}"
    ready = folder / "ledger-fixed"
    flaky = {"calls": 0}
    demo = demo_module(folder)  # the steps run from the demo's folder: tracebacks name it
    orders, inventory = demo.orders_pipeline(flaky), demo.inventory_pipeline(ready)
    weather = demo.weather_pipeline()
    shown: dict[str, str] = {}
    for _ in range(2):
        assert weather.run_sync(tracker=tracker).ok
    for _ in range(2):
        assert orders.run_sync(tracker=tracker).ok
    failed = inventory.run_sync(tracker=tracker)
    assert not failed.ok
    shown["failed"] = failed.run_id
    ready.write_text("yes", encoding="utf-8")
    resumed = inventory.run_sync(tracker=tracker, resume=failed.run_id)
    assert resumed.ok, resumed.errors
    shown["resumed"] = resumed.run_id
    assert weather.run_sync(tracker=tracker).ok
    retried = orders.run_sync(tracker=tracker)  # its enrichment fails once, then succeeds
    assert retried.ok, retried.errors
    shown["retried"] = retried.run_id
    assert weather.run_sync(tracker=tracker).ok
    return shown


# -- the server and the browser --------------------------------------------------------------------


class UiProcess:
    """``pipectl ui --port 0`` running in ``folder``; ``url`` once it listens."""

    def __init__(self, folder: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPECTL_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipectl.cli", "ui", "--port", "0"],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""

    def __enter__(self) -> UiProcess:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                _, err = self.process.communicate()
                raise RuntimeError(f"pipectl ui exited with {self.process.returncode}: {err}")
            found = re.search(r" at (http://\S+/)$", line.strip())
            if found:
                self.url = found.group(1).rstrip("/")
                return self
        raise TimeoutError("pipectl ui printed no URL")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def photograph(url: str, shown: dict[str, str], out: Path, executable: str) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            page.goto(url + "/")
            page.wait_for_selector("#runs tbody tr")
            written.append(out / RUNS_PNG)
            page.screenshot(path=str(written[-1]), full_page=True)
            page.goto(f"{url}/runs/{shown['failed']}")
            page.wait_for_selector("#dag svg g.node")
            written.append(out / RUN_PNG)
            page.screenshot(path=str(written[-1]), full_page=True)
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the PNGs go")
    parser.add_argument("--chromium", help="the chromium binary (default: Debian's)")
    args = parser.parse_args(argv)
    executable = args.chromium or chromium_executable()
    if executable is None:
        print("screenshots: no chromium binary (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pipectl-ui-demo-") as tmp:
        project = Path(tmp) / "demo"
        shown = build_project(project)
        with UiProcess(project) as ui:
            written = photograph(ui.url, shown, args.out.resolve(), executable)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
