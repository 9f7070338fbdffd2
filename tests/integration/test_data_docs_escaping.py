"""Data Docs of hostile feed text: GX is handed escaped text and its pages carry no script or CDN.

The browser check (``tests/e2e/test_audit_view_browser.py``) opens such a page in chromium; this
one reads the rendered files, so it runs wherever PostgreSQL does.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commerce_sync.audit import ledger
from commerce_sync.config import BatchBreakers
from commerce_sync.quality.evidence import harden_pages, html_text
from commerce_sync.quality.gate import check_batch
from commerce_sync.quality.suites import NUMBER_SPACES, SUPPLIER_OFFER_COLUMNS, SUPPLIER_OFFERS, price_pattern

pytestmark = pytest.mark.integration

IMG = '<img src=x onerror="alert(document.cookie)">'
SCRIPT = "<script>alert(1)</script>"
GOOD = {"gtin": "5901234123457", "name": "Kubek", "purchase_price": "12,30", "currency": "PLN", "quantity": "4"}


def test_html_text_escapes_as_html_escape_does(hub_dsn: str) -> None:
    texts = [IMG, SCRIPT, "a & b < c > d \" e ' f", "&amp;", "plain", ""]
    with psycopg.connect(hub_dsn) as conn:
        for text in texts:
            escaped = conn.execute(f"SELECT {html_text('%s::text')}", (text,)).fetchone()
            assert escaped == (html.escape(text),), text


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("<>&\"'ab;#x1 "), max_size=20))
def test_html_text_matches_html_escape_on_any_mix(hub_template: str, text: str) -> None:
    with psycopg.connect(hub_template) as conn:
        assert conn.execute(f"SELECT {html_text('%s::text')}", (text,)).fetchone() == (html.escape(text),)


def test_quarantined_payloads_reach_the_pages_escaped_without_scripts_or_cdn(hub_dsn: str, tmp_path: Path) -> None:
    rows = [dict(GOOD, supplier_sku=f"S-{i}") for i in range(1, 7)]
    rows[1].update(supplier_sku=IMG, purchase_price="0")
    rows[2].update(gtin=SCRIPT, name=IMG)
    transfer = ledger.Transfer(source="supplier:acme", target="hub", dataset="supplier_offer")
    columns = ("transfer_id", "supplier", "record_no", "source_line", *SUPPLIER_OFFER_COLUMNS)
    statement = f"COPY staging.supplier_offer ({', '.join(columns)}) FROM STDIN"
    with psycopg.connect(hub_dsn) as conn, conn.cursor() as cur, cur.copy(statement) as copy:
        for no, row in enumerate(rows, start=1):
            copy.write_row((transfer.transfer_id, "acme", no, no + 1, *(row[c] for c in SUPPLIER_OFFER_COLUMNS)))
    transfer.rows_read = len(rows)
    check_batch(
        hub_dsn,
        SUPPLIER_OFFERS,
        transfer,
        limits=BatchBreakers(),
        override=None,
        docs_dir=tmp_path,
        params={"decimal_separator": ",", "price_pattern": price_pattern(","), "spaces": NUMBER_SPACES},
    )
    assert transfer.rows_rejected == 2
    site = (tmp_path / transfer.details["data_docs"]).parent
    pages = {p: p.read_text(encoding="utf-8") for p in site.rglob("*.html")}
    text = "".join(pages.values())
    for payload in (IMG, SCRIPT):
        assert payload not in text, "a payload reached a page as markup"
    assert f"(key {html.escape(IMG)}, line 3)" in text, "the SKU is shown, escaped once"
    assert "&amp;lt;img src=x onerror=&amp;quot;alert" not in text.replace("replace(", ""), "escaped twice"
    for page, content in pages.items():
        assert not re.search(r"<script", content, re.IGNORECASE), page
        assert not re.search(r"""<(link|img)\b[^>]*(href|src)=["']?(https?:)?//""", content, re.IGNORECASE), page
        assert not re.search(r"url\(\s*['\"]?https?://", content, re.IGNORECASE), page


def test_harden_pages_strips_scripts_and_remote_resources(tmp_path: Path) -> None:
    page = tmp_path / "a" / "page.html"
    page.parent.mkdir()
    page.write_text(
        '<html><head><script src="https://code.jquery.com/jquery.js"></script>'
        '<link rel="stylesheet" href="https://cdn.example/b.css"/><link rel="icon" href="./static/f.ico">'
        "<style>.x{background:url('https://s3.example/logo.png') 0 0}</style></head>"
        '<body><SCRIPT type="text/javascript">\nvar a = "</p>";\n</SCRIPT><img src="//cdn.example/x.png">'
        '<img src="./static/ok.png"><a href="https://greatexpectations.io">GX</a><p>kept</p></body></html>',
        encoding="utf-8",
    )
    untouched = tmp_path / "plain.html"
    untouched.write_text("<p>nothing to remove</p>", encoding="utf-8")
    assert harden_pages(tmp_path) == 5
    assert page.read_text(encoding="utf-8") == (
        '<html><head><link rel="icon" href="./static/f.ico"><style>.x{background:none 0 0}</style></head>'
        '<body><img src="./static/ok.png"><a href="https://greatexpectations.io">GX</a><p>kept</p></body></html>'
    )
    assert untouched.read_text(encoding="utf-8") == "<p>nothing to remove</p>"
