"""Signed exported ledger heads: a superuser rewrite of the chain is caught, so is a forged head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg.rows import dict_row

from commerce_sync import cli
from commerce_sync.audit import heads, ledger
from commerce_sync.db import connect
from commerce_sync.errors import CommerceSyncError

pytestmark = pytest.mark.integration
KEY = b"test-ledger-key"


@pytest.fixture(autouse=True)
def _ledger_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are keyed with the same key the heads are signed with."""
    monkeypatch.setenv(heads.KEY_ENV, KEY.decode())


def _append(dsn: str, n: int) -> list[ledger.LedgerRow]:
    with connect(dsn) as conn:
        return [
            ledger.append(
                conn, ledger.Transfer(source=f"src{i}", target="hub", dataset="product", rows_read=i), "success"
            )
            for i in range(n)
        ]


def _rewrite_from(dsn: str, seq: int, key: bytes | None = KEY) -> None:
    """What a superuser can do: change a row and recompute every hash from there on.

    With ``key`` (a superuser who also stole the ledger key) the MACs are recomputed too; without,
    they are left as they were.
    """
    with connect(dsn) as conn:
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("UPDATE audit.transfer SET rows_read = rows_read + 1000 WHERE seq = %s", (seq,))
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT seq, {', '.join(ledger.HASHED_FIELDS + ledger.OPTIONAL_HASHED_FIELDS)} "
                "FROM audit.transfer ORDER BY seq"
            ).fetchall()
        prev = ledger.GENESIS
        for row in rows:
            if row["seq"] >= seq:
                digest = ledger.row_hash(prev, row)
                conn.execute(
                    "UPDATE audit.transfer SET prev_hash = %s, hash = %s WHERE seq = %s", (prev, digest, row["seq"])
                )
                if key is not None:
                    conn.execute(
                        "UPDATE audit.transfer SET mac = %s WHERE seq = %s", (ledger.row_mac(key, digest), row["seq"])
                    )
            prev = conn.execute("SELECT hash FROM audit.transfer WHERE seq = %s", (row["seq"],)).fetchone()[0]  # type: ignore[index]
        conn.execute("ALTER TABLE audit.transfer ENABLE ALWAYS TRIGGER transfer_refuse_update_delete")


def test_export_and_verify_heads(hub_dsn: str, tmp_path: Path) -> None:
    rows = _append(hub_dsn, 3)
    with connect(hub_dsn) as conn:
        path = heads.export_head(conn, tmp_path, KEY)
    document = json.loads(path.read_text())
    assert path.name.startswith(f"ledger-head-{rows[-1].seq:012d}-")
    assert (document["seq"], document["hash"], document["rows"]) == (rows[-1].seq, rows[-1].hash, 3)
    _append(hub_dsn, 2)
    with connect(hub_dsn) as conn:
        heads.export_head(conn, tmp_path, KEY)
        result = heads.verify_against_heads(conn, tmp_path, KEY)
    assert result.ok, result
    assert result.heads_checked == 2


def test_superuser_rewrite_verifies_internally_but_not_against_a_head(hub_dsn: str, tmp_path: Path) -> None:
    rows = _append(hub_dsn, 5)
    with connect(hub_dsn) as conn:
        heads.export_head(conn, tmp_path, KEY)
    _rewrite_from(hub_dsn, rows[2].seq)
    with connect(hub_dsn) as conn:
        assert ledger.verify(conn).ok, "the rewritten chain is internally consistent"
        result = heads.verify_against_heads(conn, tmp_path, KEY)
    assert not result.ok
    assert result.chain is not None and result.chain.ok
    assert [p.seq for p in result.problems] == [rows[-1].seq]
    assert "rewritten" in result.problems[0].problem


def test_forged_head_file_is_reported(hub_dsn: str, tmp_path: Path) -> None:
    _append(hub_dsn, 2)
    with connect(hub_dsn) as conn:
        path = heads.export_head(conn, tmp_path, KEY)
    forged = json.loads(path.read_text())
    forged["rows"] = 99
    (tmp_path / "ledger-head-000000000099-forged.json").write_text(json.dumps(forged))
    with connect(hub_dsn) as conn:
        result = heads.verify_against_heads(conn, tmp_path, KEY)
        other_key = heads.verify_against_heads(conn, tmp_path, b"another key")
    assert [p.file for p in result.problems] == ["ledger-head-000000000099-forged.json"]
    assert "signature" in result.problems[0].problem
    # With another key both head files fail their signature, and the rows' MACs fail too.
    assert len([p for p in other_key.problems if p.file != "(chain)"]) == 2
    assert other_key.problems[0].file == "(chain)" and "MAC does not match" in other_key.problems[0].problem


def test_export_refuses_without_key_or_on_a_broken_chain(hub_dsn: str, tmp_path: Path) -> None:
    with connect(hub_dsn) as conn, pytest.raises(CommerceSyncError, match="empty"):
        heads.export_head(conn, tmp_path, KEY)
    rows = _append(hub_dsn, 2)
    with connect(hub_dsn) as conn, pytest.raises(heads.LedgerKeyMissing):
        heads.export_head(conn, tmp_path, b"")
    with connect(hub_dsn) as conn:
        conn.execute("ALTER TABLE audit.transfer DISABLE TRIGGER transfer_refuse_update_delete")
        conn.execute("UPDATE audit.transfer SET rows_read = 5 WHERE seq = %s", (rows[0].seq,))
    with connect(hub_dsn) as conn, pytest.raises(CommerceSyncError, match="broken"):
        heads.export_head(conn, tmp_path, KEY)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_verify(hub_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _append(hub_dsn, 3)
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    monkeypatch.delenv(heads.KEY_ENV, raising=False)
    assert cli.main(["ledger", "export-head", "--target", str(tmp_path)]) == 2  # no key: refused
    monkeypatch.setenv(heads.KEY_ENV, KEY.decode())
    assert cli.main(["ledger", "export-head", "--target", str(tmp_path)]) == 0
    assert cli.main(["ledger", "verify", "--heads-dir", str(tmp_path)]) == 0
    _rewrite_from(hub_dsn, rows[1].seq)
    assert cli.main(["ledger", "verify"]) == 0
    assert cli.main(["ledger", "verify", "--heads-dir", str(tmp_path)]) == 1


def test_superuser_rewrite_without_the_key_fails_verification_on_its_own(hub_dsn: str) -> None:
    rows = _append(hub_dsn, 4)
    _rewrite_from(hub_dsn, rows[1].seq, key=None)
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)
    assert not result.ok
    assert result.first_broken_seq == rows[1].seq
    assert result.problem == "MAC does not match: row written or rewritten without the ledger key"


def test_rows_after_the_last_head_are_not_yet_anchored(
    hub_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    monkeypatch.delenv(heads.HEADS_DIR_ENV, raising=False)
    rows = _append(hub_dsn, 3)
    with connect(hub_dsn) as conn:
        heads.export_head(conn, tmp_path, KEY)
    _append(hub_dsn, 2)
    with connect(hub_dsn) as conn:
        result = heads.verify_against_heads(conn, tmp_path, KEY)
    assert result.ok, result
    assert (result.anchored_seq, result.not_anchored_rows) == (rows[-1].seq, 2)

    capsys.readouterr()
    assert cli.main(["ledger", "verify", "--heads-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ledger OK" in out
    assert f"newest valid at seq {rows[-1].seq}; not yet anchored: 2 rows after it" in out
    assert "0 legacy (unkeyed, written before keying) rows precede 5 keyed rows" in out
    monkeypatch.setenv(heads.HEADS_DIR_ENV, str(tmp_path))  # the default the DAG uses too
    assert cli.main(["ledger", "verify", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads"]["not_anchored_rows"] == 2 and report["chain"]["keyed_rows"] == 5
    monkeypatch.delenv(heads.HEADS_DIR_ENV)
    assert cli.main(["ledger", "verify"]) == 0
    assert "not yet anchored: 5 rows (no head files checked" in capsys.readouterr().out


def test_verify_without_a_key_names_the_variable(
    hub_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _append(hub_dsn, 1)
    monkeypatch.setenv("HUB_DATABASE_URL", hub_dsn)
    monkeypatch.delenv(heads.KEY_ENV)
    assert cli.main(["ledger", "verify"]) == 2
    assert heads.KEY_ENV in capsys.readouterr().err
    with connect(hub_dsn) as conn:
        result = ledger.verify(conn)  # the library reports it instead of raising (the audit view shows it)
    assert not result.ok and heads.KEY_ENV in (result.problem or "")
