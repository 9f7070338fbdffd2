"""The auditor's view (commerce_sync.audit.view) over HTTP: auth, filters, detail, CSV, verify.

Runs the FastAPI app in-process (TestClient) against a real PostgreSQL hub, mounted under
``/audit`` as the Airflow plugin mounts it. Tokens are minted by Airflow's configured auth manager
(SimpleAuthManager in the embedded Airflow home), so validation is the real one.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.types.json import Jsonb

from commerce_sync.audit import ledger
from commerce_sync.audit.view import csv_cell, read_only

pytestmark = pytest.mark.integration

ACME_ID = uuid.UUID("00000000-0000-4000-8000-0000000000ac")
BRAVO_ID = uuid.UUID("00000000-0000-4000-8000-0000000000b0")
FAILED_ID = uuid.UUID("00000000-0000-4000-8000-0000000000fa")


@pytest.fixture(scope="module")
def auth_manager() -> Any:
    """Airflow's auth manager, initialised as the api-server does it."""
    if "AIRFLOW_HOME" not in os.environ or not os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET"):
        pytest.skip("needs the embedded Airflow home and JWT secret: run through `make test` (scripts/test.sh)")
    from airflow.api_fastapi.app import init_auth_manager

    return init_auth_manager()


def _token(auth_manager: Any, username: str = "auditor", role: str | None = "viewer") -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def _fill(dsn: str) -> None:
    """A ledger with 3 named transfers plus 55 ERP transfers, and quarantined rows for acme."""
    with psycopg.connect(dsn) as conn:
        run = ledger.RunContext(run_id="manual__1", dag_id="supplier_feeds", task_id="load", try_number=1)
        acme = ledger.Transfer(
            source="supplier:acme",
            target="hub",
            dataset="supplier_offer",
            run=run,
            transfer_id=ACME_ID,
            rows_read=201,
            rows_written=199,
            rows_rejected=2,
            rows_changed=199,
            payload_sha256="a" * 64,
            details={
                "url": "http://127.0.0.1/acme.xml",
                "validation": {"suite": "supplier_offer", "expectations": 7, "passed": 5, "failed": 2},
            },
        )
        ledger.append(conn, acme, "success")
        for record_no, (key, value, reason) in enumerate(
            [("ACM-BAD-PRICE", '=HYPERLINK("http://evil")', "price is not a number"), ("ACM-BAD-EAN", "123", "bad")],
            start=1,
        ):
            conn.execute(
                """INSERT INTO hub.quarantine (dataset, source, transfer_id, record_key, record_no, source_line,
                                               expectation, column_name, observed_value, reason, raw)
                   VALUES ('supplier_offer', 'supplier:acme', %s, %s, %s, %s, 'expect_match_regex', 'price',
                           %s, %s, %s)""",
                (ACME_ID, key, record_no, record_no + 10, value, reason, Jsonb({"sku": key, "price": value})),
            )
        bravo = ledger.Transfer(
            source="supplier:bravo", target="hub", dataset="supplier_offer", run=run, transfer_id=BRAVO_ID, rows_read=3
        )
        ledger.append(conn, bravo, "success")
        failed = ledger.Transfer(
            source="hub",
            target="channel:allegro",
            dataset="channel_offer",
            run=ledger.RunContext(run_id="manual__1", dag_id="publish_allegro", task_id="publish"),
            transfer_id=FAILED_ID,
            message="HTTPError: 503 from allegro",
        )
        ledger.append(conn, failed, "failed")
        for i in range(55):
            erp = ledger.Transfer(
                source="erp",
                target="hub",
                dataset="product",
                run=ledger.RunContext(run_id=f"scheduled__{i}", dag_id="erp_products", task_id="load"),
                rows_read=i,
            )
            ledger.append(conn, erp, "success")


@pytest.fixture
def client(hub_dsn: str, auth_manager: Any) -> Iterator[Any]:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from commerce_sync.audit.view import create_app

    _fill(hub_dsn)
    root = FastAPI()
    root.mount("/audit", create_app(dsn=lambda: hub_dsn))
    with TestClient(root, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def viewer(auth_manager: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(auth_manager)}"}


def test_unauthenticated_html_redirects_to_airflow_login(client: Any) -> None:
    for path in ("/audit/", "/audit/verify", f"/audit/transfers/{ACME_ID}", "/audit/trace?channel=a&sku=b"):
        response = client.get(path)
        assert response.status_code == 303, path
        location = urlsplit(response.headers["location"])
        assert location.path == "/auth/login"
        assert parse_qs(location.query)["next"] == [f"http://testserver{path}"]


def test_unauthenticated_csv_is_401(client: Any) -> None:
    for path in ("/audit/transfers.csv", f"/audit/transfers/{ACME_ID}/quarantine.csv"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "ACM-BAD" not in response.text


def test_invalid_or_expired_tokens_are_refused(client: Any, auth_manager: Any) -> None:
    forged = _token(auth_manager)[:-4] + "AAAA"
    assert client.get("/audit/transfers.csv", headers={"Authorization": f"Bearer {forged}"}).status_code in (401, 403)
    assert client.get("/audit/", headers={"Authorization": f"Bearer {forged}"}).status_code == 303
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    expired = auth_manager.generate_jwt(
        SimpleAuthManagerUser(username="auditor", role="viewer"), expiration_time_in_seconds=-120
    )
    response = client.get("/audit/transfers.csv", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401


def test_user_without_role_is_forbidden(client: Any, auth_manager: Any) -> None:
    headers = {"Authorization": f"Bearer {_token(auth_manager, 'nobody', None)}"}
    response = client.get("/audit/", headers=headers)
    assert response.status_code == 403
    assert "may not see" in response.text
    assert client.get("/audit/transfers.csv", headers=headers).status_code == 403


def test_cookie_token_as_set_by_the_airflow_login(client: Any, auth_manager: Any) -> None:
    client.cookies.set("_token", _token(auth_manager, "cookie-user"))
    response = client.get("/audit/")
    assert response.status_code == 200
    assert "signed in as cookie-user" in response.text


def test_list_is_newest_first_paginated_and_filtered(client: Any, viewer: dict[str, str]) -> None:
    first = client.get("/audit/", headers=viewer)
    assert first.status_code == 200
    assert "58 transfers, page 1 of 2" in first.text
    assert first.text.count('href="/audit/transfers/') == 50
    assert first.text.index(">58</a>") < first.text.index(">9</a>")  # seq 58 before seq 9
    second = client.get("/audit/?page=2", headers=viewer)
    assert "page 2 of 2" in second.text
    assert second.text.count('href="/audit/transfers/') == 8
    assert f'href="/audit/transfers/{ACME_ID}"' in second.text

    only_failed = client.get("/audit/", params={"status": "failed"}, headers=viewer)
    assert "1 transfers, page 1 of 1" in only_failed.text
    assert f"/audit/transfers/{FAILED_ID}" in only_failed.text
    by_target = client.get("/audit/", params={"target": "channel:allegro", "dag_id": "publish_allegro"}, headers=viewer)
    assert "1 transfers" in by_target.text
    by_source = client.get("/audit/", params={"source": "supplier:acme"}, headers=viewer)
    assert "1 transfers" in by_source.text
    today = datetime.now(UTC).date()
    in_range = client.get("/audit/", params={"date_from": str(today), "date_to": str(today)}, headers=viewer)
    assert "58 transfers" in in_range.text
    tomorrow = today + timedelta(days=1)
    assert "0 transfers" in client.get("/audit/", params={"date_from": str(tomorrow)}, headers=viewer).text
    assert client.get("/audit/", params={"date_from": "yesterday"}, headers=viewer).status_code == 422


def test_transfer_detail_shows_counts_validation_and_quarantine(client: Any, viewer: dict[str, str]) -> None:
    response = client.get(f"/audit/transfers/{ACME_ID}", headers=viewer)
    assert response.status_code == 200
    page = response.text
    assert "supplier:acme → hub" in page
    assert "a" * 64 in page
    assert 'id="validation"' in page and "expectations" in page
    assert "ACM-BAD-PRICE" in page and "ACM-BAD-EAN" in page
    assert "=HYPERLINK(&quot;http://evil&quot;)" in page  # escaped, not markup
    assert client.get(f"/audit/transfers/{uuid.uuid4()}", headers=viewer).status_code == 404
    assert client.get("/audit/transfers/not-a-uuid", headers=viewer).status_code == 422


def test_quarantine_csv_is_neutralised(client: Any, viewer: dict[str, str]) -> None:
    response = client.get(f"/audit/transfers/{ACME_ID}/quarantine.csv", headers=viewer)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["record_key"] for r in rows] == ["ACM-BAD-PRICE", "ACM-BAD-EAN"]
    assert rows[0]["observed_value"] == '\'=HYPERLINK("http://evil")'
    assert rows[1]["observed_value"] == "123"


def test_transfers_csv_keeps_the_filters(client: Any, viewer: dict[str, str]) -> None:
    response = client.get("/audit/transfers.csv", params={"dag_id": "supplier_feeds"}, headers=viewer)
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["source"] for r in rows] == ["supplier:bravo", "supplier:acme"]  # newest first
    assert rows[1]["rows_rejected"] == "2"
    everything = list(csv.DictReader(io.StringIO(client.get("/audit/transfers.csv", headers=viewer).text)))
    assert len(everything) == 58  # not paginated


def test_verify_reports_ok_then_the_first_broken_row(client: Any, viewer: dict[str, str], hub_dsn: str) -> None:
    with psycopg.connect(hub_dsn) as conn:
        head = conn.execute("SELECT seq, hash FROM audit.transfer ORDER BY seq DESC LIMIT 1").fetchone()
    page = client.get("/audit/verify", headers=viewer).text
    assert "chain OK" in page and head[1] in page and "<dd class=mono>58</dd>" in page

    with psycopg.connect(hub_dsn) as conn:  # a superuser rewriting history behind the ledger's back
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("UPDATE audit.transfer SET rows_read = 1000 WHERE transfer_id = %s", (BRAVO_ID,))
    page = client.get("/audit/verify", headers=viewer).text
    assert "chain BROKEN" in page
    assert "<dt>first broken seq</dt><dd class=mono>2</dd>" in page
    assert "row content does not match hash" in page


def test_trace_renders_nested_result_with_gaps(
    client: Any, viewer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_trace(conn: psycopg.Connection, channel: str, sku: str, at: datetime | None = None) -> dict:
        seen.update(channel=channel, sku=sku, at=at, read_only=conn.read_only)
        return {
            "offer": {"channel": channel, "sku": sku, "price": "12.99"},
            "transfers": [{"seq": 1, "source": "erp"}, {"seq": 2, "source": "supplier:acme"}],
            "gaps": ["no ledger row for stock <script>"],
        }

    monkeypatch.setattr("commerce_sync.audit.view.load_trace_offer", lambda: fake_trace)
    response = client.get(
        "/audit/trace", params={"channel": "allegro", "sku": "SKU-1", "at": "2026-11-01T10:00"}, headers=viewer
    )
    assert response.status_code == 200
    assert seen == {
        "channel": "allegro",
        "sku": "SKU-1",
        "at": datetime(2026, 11, 1, 10, tzinfo=UTC),
        "read_only": True,
    }
    assert 'class="gaps" id="gaps"' in response.text
    assert "no ledger row for stock &lt;script&gt;" in response.text
    assert "supplier:acme" in response.text and "<th>seq</th>" in response.text

    monkeypatch.setattr("commerce_sync.audit.view.load_trace_offer", lambda: None)
    missing = client.get("/audit/trace", params={"channel": "allegro", "sku": "SKU-1"}, headers=viewer)
    assert missing.status_code == 501


def test_view_connections_refuse_writes(hub_dsn: str) -> None:
    with read_only(hub_dsn) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("CREATE TABLE hub.should_not_exist (x int)")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+48 600", "'+48 600"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        (None, ""),
        (12, "12"),
        ({"a": 1}, '{"a": 1}'),
    ],
)
def test_csv_cell(value: Any, cell: str) -> None:
    assert csv_cell(value) == cell


def test_data_docs_are_linked_and_served_without_path_traversal(
    hub_dsn: str, auth_manager: Any, viewer: dict[str, str], tmp_path: Any
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from commerce_sync.audit.view import create_app, data_docs_file

    docs = tmp_path / "data_docs"
    site = docs / "supplier_acme" / str(ACME_ID)
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<html><body>GX evidence of acme</body></html>", encoding="utf-8")
    (site / "validations" / "page.html").write_text("<html>rows</html>", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not for auditors", encoding="utf-8")
    (docs / "link").symlink_to(tmp_path / "secret.txt")
    relative = f"supplier_acme/{ACME_ID}/index.html"
    with psycopg.connect(hub_dsn) as conn:
        transfer = ledger.Transfer(
            source="supplier:acme",
            target="hub",
            dataset="supplier_offer",
            transfer_id=ACME_ID,
            details={"data_docs": relative, "breakers": {"outcome": "blocked", "tripped": ["row_count_drop"]}},
        )
        ledger.append(conn, transfer, "failed")
    root = FastAPI()
    root.mount("/audit", create_app(dsn=lambda: hub_dsn, data_docs_dir=lambda: docs))
    with TestClient(root, follow_redirects=False) as client:
        page = client.get(f"/audit/transfers/{ACME_ID}", headers=viewer).text
        assert f'id="data-docs" href="/audit/data-docs/{relative}"' in page
        assert 'id="breakers"' in page and "row_count_drop" in page
        served = client.get(f"/audit/data-docs/{relative}", headers=viewer)
        assert served.status_code == 200 and "GX evidence of acme" in served.text
        assert served.headers["content-type"].startswith("text/html")
        # GX pages show feed data: sandboxed, no script may run there.
        csp = served.headers["content-security-policy"]
        assert csp.startswith("sandbox ") and "allow-scripts" not in csp and "script-src" not in csp
        assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
        assert served.headers["x-content-type-options"] == "nosniff"
        assert client.get(f"/audit/data-docs/supplier_acme/{ACME_ID}/validations/page.html", headers=viewer).text
        for escape in ("../secret.txt", "%2e%2e/secret.txt", "supplier_acme/../../secret.txt", "link", "/etc/passwd"):
            assert client.get(f"/audit/data-docs/{escape}", headers=viewer).status_code == 404, escape
        assert client.get(f"/audit/data-docs/{relative}").status_code in (303, 401), "auditors must log in"
    assert data_docs_file("../secret.txt", docs) is None
    assert data_docs_file(relative, docs) == (site / "index.html").resolve()


def test_every_response_carries_the_security_headers(client: Any, viewer: dict[str, str]) -> None:
    from commerce_sync.audit.view import PAGE_CSP

    for path in (
        "/audit/",
        "/audit/verify",
        f"/audit/transfers/{ACME_ID}",
        "/audit/transfers.csv",
        "/audit/static/audit.css",
        "/audit/trace?channel=allegro&sku=x",
    ):
        response = client.get(path, headers=viewer)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == PAGE_CSP, path
        assert "script-src" not in PAGE_CSP and "default-src 'none'" in PAGE_CSP
        assert "frame-ancestors 'self'" in PAGE_CSP
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
    refused = client.get("/audit/transfers.csv")  # no token: refused, with the headers all the same
    assert refused.status_code == 401
    assert refused.headers["content-security-policy"] == PAGE_CSP


def test_absurd_page_numbers_and_nul_bytes_are_400(client: Any, viewer: dict[str, str]) -> None:
    assert client.get("/audit/?page=99999999999999999999", headers=viewer).status_code == 400
    assert client.get("/audit/?page=1000000000", headers=viewer).status_code == 200  # the last one answered
    for path, params in (
        ("/audit/", {"source": "supplier:\x00acme"}),
        ("/audit/", {"dag_id": "\x00"}),
        ("/audit/transfers.csv", {"target": "hub\x00"}),
        ("/audit/trace", {"channel": "allegro", "sku": "SKU\x00"}),
    ):
        response = client.get(path, params=params, headers=viewer)
        assert response.status_code == 400, (path, params)
        assert "NUL" in response.text
    assert client.get("/audit/", params={"source": "supplier:\x00acme"}).status_code == 303, "login comes first"


def test_the_list_page_starts_with_the_health_of_sources_and_channels(client: Any, viewer: dict[str, str]) -> None:
    page = client.get("/audit/", headers=viewer).text
    health = page[page.index('<table id="health-table">') : page.index('<p id="event-triggers">')]
    assert "<td>supplier:acme</td>" in health and "<td>erp</td>" in health
    acme_row = health[health.index("<td>supplier:acme</td>") :].split("</tr>", 1)[0]
    assert '<td class="num">2</td>' in acme_row  # its two open quarantine rows
    assert 'class="failed"><td>channel:allegro</td>' in health  # its only transfer failed
    assert "Event triggers: " in page
    assert page.index('id="health"') < page.index('id="transfers"')
