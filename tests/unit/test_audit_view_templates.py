"""The auditor's view's templates: autoescaped, strict, nothing marked safe, shared layout and CSS."""

from __future__ import annotations

import ast
import html
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jinja2
import markupsafe
import pytest

from commerce_sync.audit import view
from commerce_sync.audit.view import static_files, templates

PAGES = ("transfers.html", "transfer.html", "orders.html", "trace.html", "verify.html", "message.html")
AUDIT_DIR = Path(view.__file__).parent


def test_every_template_is_autoescaped_and_strict() -> None:
    env = templates()
    names = env.list_templates()
    assert set(PAGES) | {"base.html", "macros.html"} == set(names)
    for name in names:
        assert env.autoescape(name) is True, name
    assert env.undefined is jinja2.StrictUndefined


@pytest.mark.parametrize("name", PAGES)
def test_each_page_extends_the_base_layout(name: str) -> None:
    source = (AUDIT_DIR / "templates" / name).read_text(encoding="utf-8")
    assert '{% extends "base.html" %}' in source


@pytest.mark.parametrize("path", sorted((AUDIT_DIR / "templates").glob("*.html")), ids=lambda p: p.name)
def test_no_template_marks_anything_safe_or_inlines_style_or_script(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert not re.search(r"\|\s*safe\b", source)
    assert not re.search(r"autoescape\s+false", source, re.IGNORECASE)
    assert not re.search(r"<\s*(style|script)\b|\sstyle\s*=|\son\w+\s*=", source, re.IGNORECASE)


@pytest.mark.parametrize("module", ["view.py", "view_queries.py"])
def test_markup_is_only_built_from_constants(module: str) -> None:
    tree = ast.parse((AUDIT_DIR / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "Markup":
                assert all(isinstance(arg, ast.Constant) for arg in node.args), ast.unparse(node)


def test_an_undefined_name_is_an_error() -> None:
    page = templates().get_template("message.html")
    with pytest.raises(jinja2.UndefinedError):
        page.render(view_name="V", base="", title="t", user=None)  # no "message"


def test_output_is_escaped_as_html_escape_does() -> None:
    text = "<script>alert('x')</script>\"><img src=x onerror=alert(1)> & more"
    page = view.render("message.html", base='/a"b', title=text, user=text, message=text)
    assert text not in page
    escaped = html.escape(text, quote=True)
    assert f"<h1>{escaped}</h1>" in page and f"<p>{escaped}</p>" in page
    assert f"signed in as {escaped}</span>" in page
    assert 'href="/a&quot;b/static/audit.css"' in page
    assert "<script>" not in page and "<img" not in page


def test_finalize_prints_none_as_nothing_and_datetimes_in_utc() -> None:
    when = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=2)))
    assert view._finalize(None) == ""
    assert view._finalize(when) == "2026-03-01 10:30:05 UTC"
    assert view._finalize(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01 00:00:00 UTC"
    assert view._finalize(5) == "5"
    own = markupsafe.Markup("<b>template markup</b>")
    assert view._finalize(own) == own


def test_render_value_nests_and_escapes() -> None:
    render_value = templates().get_template("macros.html").module.render_value
    value = {
        "<k>": [{"a": 1, "b": None}, {"a": "<i>"}],
        "gaps": ["x"],
        "empty": {},
        "none": [],
        "plain": [1, "two"],
    }
    assert str(render_value(value)) == (
        "<dl><dt>&lt;k&gt;</dt><dd><div><table><tr><th>a</th><th>b</th></tr>"
        '<tr><td>1</td><td><span class="muted">-</span></td></tr>'
        '<tr><td>&lt;i&gt;</td><td><span class="muted">-</span></td></tr></table></div></dd>'
        '<dt>gaps</dt><dd><ul class="gaps"><li>x</li></ul></dd>'
        '<dt>empty</dt><dd><span class="muted">{}</span></dd>'
        '<dt>none</dt><dd><span class="muted">(none)</span></dd>'
        "<dt>plain</dt><dd><ul><li>1</li><li>two</li></ul></dd></dl>"
    )


def test_the_layout_links_only_static_files_that_exist() -> None:
    base = (AUDIT_DIR / "templates" / "base.html").read_text(encoding="utf-8")
    linked = re.findall(r"/static/([\w.-]+)", base)
    assert linked == ["audit.css"]
    assert set(linked) <= set(static_files())
    assert b"header{" in static_files()["audit.css"]
