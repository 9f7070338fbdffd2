"""Which channels an orders run imports, from the asset events that started it (airflow_glue.channels_rung)."""

from __future__ import annotations

from commerce_sync.airflow_glue import channels_rung

DOORBELL = {"payload": {"channels": ["allegro"], "news": {"allegro": {"marker": "event:42"}}}, "from_trigger": True}
WEBHOOK = {"channel": "shop", "topic": "order.created", "delivery_id": "d-1"}


def test_a_doorbell_run_imports_the_channels_that_rang() -> None:
    assert channels_rung("asset_triggered", [DOORBELL]) == {"allegro"}


def test_folded_events_add_up() -> None:
    second = {"payload": {"channels": ["ebay", "allegro"]}}
    assert channels_rung("asset_triggered", [DOORBELL, second, WEBHOOK]) == {"allegro", "ebay", "shop"}


def test_the_cron_and_a_hand_started_run_import_every_channel() -> None:
    assert channels_rung("scheduled", [DOORBELL]) is None
    assert channels_rung("manual", []) is None


def test_an_event_naming_no_channel_imports_every_channel() -> None:
    by_hand = {"note": "posted to /api/v2/assets/events by an operator"}
    assert channels_rung("asset_triggered", [DOORBELL, by_hand]) is None
    assert channels_rung("asset_triggered", [{"payload": {"channels": []}}]) is None
    assert channels_rung("asset_triggered", [{"payload": {"channels": [7]}}]) is None
    assert channels_rung("asset_triggered", []) is None
