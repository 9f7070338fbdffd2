"""The auditor's view in a real browser, inside the real Airflow UI.

Starts ``airflow api-server`` (embedded Airflow home, plugins from ``plugins/``) with the ``hub_db``
connection pointing at a test hub holding a few ledger rows, offers and quarantined rows, then
drives Debian's chromium with Playwright: log in, open *Browse > Audit ledger*, filter the
transfers, open one, trace a SKU, verify the chain and download the CSV export. Then hub text
carrying XSS payloads (``tests/integration/audit_view_hostile.py``) is shown on the list, a
transfer's page, the orders list and the SKU trace: it must read as text, and no payload may run (they would set
page globals or open a dialog; a control injects the same payloads as markup to show they would).
Screenshots go to the test's tmp dir; the chain verification is copied to
``.data/screenshots/audit_view.png``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg.types.json import Jsonb

from commerce_sync.audit import ledger
from commerce_sync.audit.view import DATA_DOCS_CSP, PAGE_CSP
from tests.integration.audit_view_hostile import IMG, SCRIPT, fill_hostile

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Payloads that leave a trace when they run: a page global, or a dialog (SCRIPT and IMG alert).
SCRIPT_FLAG = "<script>window.__xssScript = 1</script>"
IMG_FLAG = '"><img src=x onerror="window.__xssImg = 1">'
BROWSER_PAYLOADS = (SCRIPT_FLAG, IMG_FLAG, SCRIPT, IMG)
XSS_STATE = "() => ({script: window.__xssScript ?? null, img: window.__xssImg ?? null})"
INJECT = "html => document.body.append(document.createRange().createContextualFragment(html))"
ACME_ID = uuid.UUID("00000000-0000-4000-8000-00000000ac01")
SKU = "SKU-000001"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fill_hub(dsn: str) -> None:
    """Ledger: ERP load, two supplier loads (acme quarantined 2 rows), a failed publish; offers."""
    with psycopg.connect(dsn) as conn:
        erp = ledger.Transfer(
            source="erp",
            target="hub",
            dataset="product",
            run=ledger.RunContext(run_id="manual__demo", dag_id="erp_products", task_id="load_products"),
            rows_read=1,
            rows_written=1,
            rows_changed=1,
            payload_sha256="e" * 64,
        )
        ledger.append(conn, erp, "success")
        conn.execute(
            """INSERT INTO hub.product (sku, gtin, name, purchase_price, currency, vat_rate, row_hash, transfer_id)
               VALUES (%s, '05901234123457', 'Demo kettle', 50, 'PLN', 0.23, 'h1', %s)""",
            (SKU, erp.transfer_id),
        )
        supplier_run = ledger.RunContext(run_id="manual__demo", dag_id="supplier_feeds", task_id="load_acme")
        acme = ledger.Transfer(
            source="supplier:acme",
            target="hub",
            dataset="supplier_offer",
            run=supplier_run,
            transfer_id=ACME_ID,
            rows_read=201,
            rows_written=199,
            rows_rejected=2,
            rows_changed=199,
            payload_sha256="a" * 64,
            details={"validation": {"suite": "supplier_offer", "expectations": 7, "passed": 5, "failed": 2}},
        )
        ledger.append(conn, acme, "success")
        for no, (key, value) in enumerate([("ACM-BAD-PRICE", "=1+2"), ("ACM-BAD-EAN", "123")], start=1):
            conn.execute(
                """INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, record_no, source_line,
                                               expectation, column_name, observed_value, reason, raw)
                   VALUES ('supplier_offer', 'supplier:acme', %s, %s, %s, %s, 'expect_match_regex', 'price',
                           %s, 'not a price', %s)""",
                (ACME_ID, key, no, no + 3, value, Jsonb({"sku": key, "price": value})),
            )
        bravo = ledger.Transfer(source="supplier:bravo", target="hub", dataset="supplier_offer", run=supplier_run)
        ledger.append(conn, bravo, "success")
        pricing = ledger.Transfer(
            source="hub",
            target="channel:allegro",
            dataset="channel_offer",
            run=ledger.RunContext(run_id="manual__demo", dag_id="channel_pricing", task_id="compute"),
            rows_read=1,
            rows_changed=1,
        )
        ledger.append(conn, pricing, "success")
        conn.execute(
            """INSERT INTO hub.channel_offer (channel, sku, price, currency, quantity, availability, cost,
                                              floor_price, floor_applied, rule_id, rule_version, row_hash,
                                              transfer_id)
               VALUES ('allegro', %s, 79.99, 'PLN', 5, 'in_stock', 50, 60, false, 'default', '1', 'h2', %s)""",
            (SKU, pricing.transfer_id),
        )
        failed = ledger.Transfer(
            source="hub",
            target="channel:allegro",
            dataset="channel_offer",
            run=ledger.RunContext(run_id="manual__demo", dag_id="publish_allegro", task_id="publish"),
            message="HTTPError: 503 from the marketplace",
        )
        ledger.append(conn, failed, "failed")


@pytest.fixture(scope="module")
def playwright_ready() -> None:
    if not CHROMIUM.exists():
        pytest.skip(
            "needs Debian's chromium at /usr/bin/chromium: `apt-get install -y chromium` (scripts/test.sh does)"
        )
    pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-dev.txt)")
    if not (REPO / ".airflow" / ".migrated-3.3.2").exists():
        pytest.skip("needs the embedded Airflow home .airflow/: run through `make test` (scripts/test.sh)")


@pytest.fixture
def api_server(playwright_ready: None, hub_dsn: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real `airflow api-server` with the project's env and hub_db pointing at the test hub."""
    _fill_hub(hub_dsn)
    port = _free_port()
    env = dict(os.environ, HUB_DATABASE_URL=hub_dsn, AIRFLOW_PORT=str(port), COMMERCE_SYNC_DATA_DIR=str(tmp_path))
    script = (
        'source scripts/common.sh; export_env; export PATH="$VENV/bin:$PATH"; ensure_airflow_home; '
        'exec airflow api-server -p "$1"'
    )
    log_path = tmp_path / "api-server.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script, "api-server", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = started + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api-server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/v2/version", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server did not answer within 120 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        startup = time.monotonic() - started
        passwords_file = REPO / ".airflow" / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords_file.read_text())["admin"]
        yield {"base": base, "password": password, "startup_s": startup, "log": log_path, "hub": hub_dsn}
    finally:
        stop_started = time.monotonic()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
        print(f"api-server stopped in {time.monotonic() - stop_started:.1f} s")


def test_auditor_view_in_the_airflow_ui(api_server: dict[str, Any], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base = api_server["base"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    timings: dict[str, float] = {"api_server_start_s": round(api_server["startup_s"], 1)}

    # Without a session, the plugin refuses: CSV -> 401, pages -> the Airflow login page.
    for data_path in ("/audit/transfers.csv", "/audit/static/audit.css"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}{data_path}", timeout=10)
        assert refused.value.code == 401, data_path

    browser_started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            context.set_default_timeout(30_000)
            page = context.new_page()

            def shot(name: str) -> Path:
                path = shots / f"{len(list(shots.iterdir())) + 1:02d}_{name}.png"
                page.screenshot(path=str(path), full_page=True)
                return path

            # Unauthenticated page -> login page, which returns to the audit view afterwards.
            page.goto(f"{base}/audit/")
            page.wait_for_url("**/auth/login**")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(api_server["password"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/audit/**")
            expect(page.locator("header")).to_contain_text("signed in as admin")
            # The style sheet is served by the plugin's app and applied (the header's blue).
            expect(page.locator("header")).to_have_css("background-color", "rgb(1, 124, 238)")

            # Open the view from the Airflow UI's navigation (Browse > Audit ledger, in an iframe).
            page.goto(f"{base}/")
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="Audit ledger").click()
            page.wait_for_url("**/plugin/audit")
            frame = page.frame_locator("iframe")
            expect(frame.locator("#page-info")).to_contain_text("5 transfers, page 1 of 1")
            shot("nav_audit_ledger")

            # Filter: supplier acme only.
            frame.locator("select[name=source]").select_option("supplier:acme")
            frame.get_by_role("button", name="Filter").click()
            expect(frame.locator("#page-info")).to_contain_text("1 transfers")
            expect(frame.locator("#transfers")).to_contain_text("supplier:acme")
            shot("filtered")

            # CSV export of the filtered list.
            with page.expect_download() as download_info:
                frame.locator("#export-csv").click()
            download = download_info.value
            csv_path = tmp_path / "transfers.csv"
            download.save_as(csv_path)
            rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
            assert [(r["source"], r["target"], r["rows_rejected"], r["transfer_id"]) for r in rows] == [
                ("supplier:acme", "hub", "2", str(ACME_ID))
            ]

            # Transfer detail with its quarantined rows.
            frame.locator("#transfers a", has_text="2").first.click()
            expect(frame.locator("h1")).to_contain_text("supplier:acme → hub")
            expect(frame.locator("#quarantine")).to_contain_text("ACM-BAD-PRICE")
            expect(frame.locator("#validation")).to_contain_text("expectations")
            shot("transfer_detail")
            with page.expect_download() as quarantine_download:
                frame.locator("#quarantine-csv").click()
            quarantine_path = tmp_path / "quarantine.csv"
            quarantine_download.value.save_as(quarantine_path)
            quarantined = list(csv.DictReader(io.StringIO(quarantine_path.read_text(encoding="utf-8"))))
            assert [(q["record_key"], q["observed_value"]) for q in quarantined] == [
                ("ACM-BAD-PRICE", "'=1+2"),
                ("ACM-BAD-EAN", "123"),
            ]

            # SKU trace.
            frame.get_by_role("link", name="SKU trace").click()
            frame.locator("input[name=channel]").fill("allegro")
            frame.locator("input[name=sku]").fill(SKU)
            frame.get_by_role("button", name="Trace").click()
            expect(frame.locator("h1")).to_contain_text(f"Trace of {SKU} on allegro")
            expect(frame.locator("#gaps, #gaps-none").first).to_be_visible()
            expect(frame.locator("#trace")).to_contain_text("79.99")
            shot("sku_trace")

            # Chain verification.
            frame.get_by_role("link", name="Chain verification").click()
            expect(frame.locator("#verify-state")).to_contain_text("chain OK")
            with psycopg.connect(api_server["hub"]) as conn:
                head = conn.execute("SELECT hash FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
            expect(frame.locator("#verify-facts")).to_contain_text(head[0])
            last = shot("chain_verification")

            # Logged out (new context, no cookie): the iframe URL sends the browser to the login page.
            anonymous = browser.new_context()
            anonymous_page = anonymous.new_page()
            anonymous_page.goto(f"{base}/audit/verify")
            anonymous_page.wait_for_url("**/auth/login?next=*")
            anonymous.close()

            # Every page comes with a strict CSP (no script at all), so payloads could not run even unescaped.
            response = page.goto(f"{base}/audit/verify")
            assert response is not None
            assert response.headers["content-security-policy"] == PAGE_CSP
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "same-origin"
            page.evaluate(INJECT, "".join((SCRIPT_FLAG, IMG_FLAG)))
            page.wait_for_timeout(1_000)
            assert page.evaluate(XSS_STATE) == {"script": None, "img": None}, "the CSP blocks injected markup"

            # Hostile hub text: shown as text on every page that shows it, never run. The CSP is bypassed
            # here, so that escaping alone is what stops the payloads (the control below shows they would run).
            unguarded = browser.new_context(bypass_csp=True, storage_state=context.storage_state())
            page = unguarded.new_page()
            hostile = fill_hostile(api_server["hub"], BROWSER_PAYLOADS)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            for url, where, text in [
                (f"{base}/audit/?source={quote(hostile.source)}", "#transfers", hostile.source),
                (f"{base}/audit/transfers/{hostile.transfer_id}", "#quarantine", hostile.reason),
                (f"{base}/audit/transfers/{hostile.transfer_id}", "#details", hostile.detail_value),
                (f"{base}/audit/trace?channel=allegro&sku={quote(hostile.sku)}", "#trace", hostile.product_name),
                (f"{base}/audit/trace?channel=allegro&sku={quote(hostile.sku)}", "#trace", hostile.outbox_error),
                (f"{base}/audit/orders?channel=allegro&oversold=1", "#orders", hostile.order_id),
                (f"{base}/audit/orders?channel=allegro&oversold=1", "#orders", hostile.erp_error),
            ]:
                page.goto(url, wait_until="load")  # "load" waits for images: a broken <img> has fired onerror
                assert page.evaluate(XSS_STATE) == {"script": None, "img": None}, url
                assert page.locator("main script, main img").count() == 0, url
                expect(page.locator(where)).to_contain_text(text)
            shot("hostile_text")
            assert dialogs == []
            # Control: the same payloads inserted as markup do run here, so the checks above can fail.
            page.evaluate(INJECT, "".join(BROWSER_PAYLOADS))
            page.wait_for_function("() => window.__xssScript === 1 && window.__xssImg === 1", timeout=10_000)
            assert dialogs, "the control's alert payloads opened no dialog"
        finally:
            browser.close()
    timings["browser_flow_s"] = round(time.monotonic() - browser_started, 1)

    keep = REPO / ".data" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(last, keep / "audit_view.png")
    print(f"timings: {timings}; screenshots: {shots}; latest copied to {keep / 'audit_view.png'}")


def _quarantine_hostile_offers(dsn: str, docs_dir: Path) -> ledger.Transfer:
    """A supplier batch whose bad rows carry payloads, through the real gate: GX renders its Data Docs."""
    from commerce_sync.config import BatchBreakers
    from commerce_sync.quality.gate import check_batch
    from commerce_sync.quality.suites import NUMBER_SPACES, SUPPLIER_OFFER_COLUMNS, SUPPLIER_OFFERS, price_pattern

    good = {"gtin": "5901234123457", "name": "Kubek", "purchase_price": "12,30", "currency": "PLN", "quantity": "4"}
    rows = [dict(good, supplier_sku=f"S-{i}") for i in range(1, 9)]
    rows[1].update(supplier_sku=IMG_FLAG, purchase_price="0")  # quarantined: its key is the payload
    rows[2].update(gtin=SCRIPT_FLAG, name=IMG_FLAG)  # quarantined: the observed GTIN is the payload
    transfer = ledger.Transfer(
        source="supplier:acme",
        target="hub",
        dataset="supplier_offer",
        run=ledger.RunContext(run_id="manual__xss", dag_id="supplier_feeds", task_id="load_acme"),
    )
    columns = ("transfer_id", "supplier", "record_no", "source_line", *SUPPLIER_OFFER_COLUMNS)
    statement = f"COPY staging.supplier_offer ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
        for no, row in enumerate(rows, start=1):
            copy.write_row((transfer.transfer_id, "acme", no, no + 1, *(row[c] for c in SUPPLIER_OFFER_COLUMNS)))
    transfer.rows_read = len(rows)
    check_batch(
        dsn,
        SUPPLIER_OFFERS,
        transfer,
        limits=BatchBreakers(),
        override=None,
        docs_dir=docs_dir,
        params={"decimal_separator": ",", "price_pattern": price_pattern(","), "spaces": NUMBER_SPACES},
    )
    assert transfer.rows_rejected == 2
    with psycopg.connect(dsn) as conn:
        ledger.append(conn, transfer, "success")
    return transfer


def test_quarantined_payloads_do_not_run_in_data_docs(
    api_server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supplier SKU ``<img src=x onerror=...>`` quarantined by the gate, its Data Docs page opened
    through the view: the text is shown, the handler does not run, nothing is fetched from a CDN."""
    from playwright.sync_api import sync_playwright

    from commerce_sync.config import data_docs_root, load_quality

    monkeypatch.setenv("COMMERCE_SYNC_DATA_DIR", str(tmp_path))  # the api-server's data dir
    docs_dir = data_docs_root(load_quality())
    transfer = _quarantine_hostile_offers(api_server["hub"], docs_dir)
    site = docs_dir / Path(transfer.details["data_docs"]).parent
    rows_page = next(p for p in site.rglob("*.html") if "onerror" in p.read_text(encoding="utf-8"))
    base = api_server["base"]
    rows_url = f"{base}/audit/data-docs/{quote(rows_page.relative_to(docs_dir).as_posix())}"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            context.set_default_timeout(30_000)
            page = context.new_page()
            page.goto(f"{base}/audit/transfers/{transfer.transfer_id}")
            page.wait_for_url("**/auth/login**")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(api_server["password"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/audit/**")
            href = page.locator("#data-docs").get_attribute("href")
            assert href == f"/audit/data-docs/{transfer.details['data_docs']}"

            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            for url in (rows_url, f"{base}{href}"):
                response = page.goto(url, wait_until="load")  # "load": a broken <img> has fired onerror by now
                assert response is not None and response.status == 200, url
                assert response.headers["content-security-policy"] == DATA_DOCS_CSP
                assert response.headers["x-content-type-options"] == "nosniff"
                assert response.headers["referrer-policy"] == "same-origin"
                assert page.evaluate(XSS_STATE) == {"script": None, "img": None}, url
                assert page.locator("img[onerror], script").count() == 0, url
            page.goto(rows_url, wait_until="load")
            body = page.locator("body").inner_text()
            assert f"key {IMG_FLAG}" in body, "the quarantined SKU reads as text"
            assert SCRIPT_FLAG in body
            assert dialogs == []
            assert requested and all(u.startswith(base) for u in requested), "no CDN: every request stays local"
            # GX's own styles are inline in its pages and still apply (the CSP allows inline style there).
            assert page.evaluate("() => [...document.styleSheets].filter(s => s.cssRules.length > 0).length") > 0
            page.screenshot(path=str(tmp_path / "data_docs_hostile.png"), full_page=True)

            # Control: with the CSP bypassed, the same payloads inserted as markup do run on this page,
            # so the checks above can fail.
            unguarded = browser.new_context(bypass_csp=True, storage_state=context.storage_state())
            control = unguarded.new_page()
            control.goto(rows_url, wait_until="load")
            assert control.evaluate(XSS_STATE) == {"script": None, "img": None}, "escaping alone stops them too"
            control.evaluate(INJECT, SCRIPT_FLAG + IMG_FLAG)
            control.wait_for_function("() => window.__xssScript === 1 && window.__xssImg === 1", timeout=10_000)
        finally:
            browser.close()
