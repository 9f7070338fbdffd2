"""A send that reached eBay (no idempotency key) but whose outcome was never recorded is read back before
being sent again: applied -> recorded without a second call; edited on eBay since -> not overwritten unless
the channel's policy is hub_wins; never applied -> sent."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from commerce_sync.audit import ledger
from commerce_sync.channels import ebay
from commerce_sync.channels.marketplace import publish_outbox
from commerce_sync.config import Channel
from commerce_sync.errors import TransientError
from commerce_sync.transport.http import CircuitBreaker
from commerce_sync_sandbox.server import SandboxServer
from tests.integration.test_ebay_publisher import (  # noqa: F401 - fixtures client, hub, sandbox
    CHANNEL,
    SKUS,
    _offer,
    _queue,
    _statuses,
    _sync,
    client,
    hub,
    sandbox,
)

pytestmark = pytest.mark.integration
A = SKUS[0]


class Crash(Exception):
    """The publisher dies after eBay answered and before the outcome is committed."""


class CrashingMarketplace(ebay.EbayMarketplace):
    def collect(self, request: Any, sent: Any) -> Any:
        raise Crash("killed between eBay's answer and the commit")


def _publish(dsn: str, api: ebay.EbayClient, policy: str, market: type[ebay.EbayMarketplace] = ebay.EbayMarketplace):
    channel = Channel(id=CHANNEL, kind="ebay", conn_id="ebay_sandbox", pricing_rule="r", reconcile=policy)
    transfer = ledger.Transfer(source="hub", target=f"channel:{CHANNEL}", dataset="offer_update")
    with ledger.recording(dsn, transfer):
        return publish_outbox(dsn, channel, market(api), transfer)


def _crash_after_apply(dsn: str, api: ebay.EbayClient, policy: str) -> None:
    with pytest.raises(Crash):
        _publish(dsn, api, policy, CrashingMarketplace)
    with psycopg.connect(dsn) as conn:
        in_doubt = conn.execute("SELECT count(*) FROM hub.outbox_attempt").fetchone()
    assert in_doubt == (1,) and _statuses(dsn)[f"{CHANNEL}:{A}:price:v2"][0] == "pending"


def _sent_once(dsn: str, api: ebay.EbayClient, price: str) -> None:
    _sync(dsn, api)
    _queue(dsn, A, "price", {"amount": price, "currency": "PLN"}, version=1)
    _publish(dsn, api, "hub_wins")


@pytest.mark.parametrize("policy", ["hub_wins", "channel_wins", "report_only"])
def test_an_applied_send_is_recorded_without_a_second_call(
    hub: str,  # noqa: F811
    client: ebay.EbayClient,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    policy: str,
) -> None:
    _sent_once(hub, client, "40.00")
    _queue(hub, A, "price", {"amount": "41.00", "currency": "PLN"}, version=2)
    _crash_after_apply(hub, client, policy)
    calls = sandbox.ebay.stats["bulk_calls"]
    assert _offer(sandbox, A)["pricingSummary"]["price"]["value"] == "41.00"  # eBay applied it
    result = _publish(hub, client, policy)
    assert sandbox.ebay.stats["bulk_calls"] == calls  # read back, not sent again
    assert (result.sent, result.requests) == (1, 0)
    assert _statuses(hub)[f"{CHANNEL}:{A}:price:v2"] == ("sent", None)


@pytest.mark.parametrize(
    ("policy", "shown", "status"), [("hub_wins", "41.00", "sent"), ("channel_wins", "39.99", "failed")]
)
def test_a_direct_edit_after_the_unconfirmed_send_follows_the_policy(
    hub: str,  # noqa: F811
    client: ebay.EbayClient,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
    policy: str,
    shown: str,
    status: str,
) -> None:
    _sent_once(hub, client, "40.00")
    _queue(hub, A, "price", {"amount": "41.00", "currency": "PLN"}, version=2)
    _crash_after_apply(hub, client, policy)
    sandbox.ebay.edit_offer(_offer(sandbox, A)["offerId"], price="39.99")  # the seller, on ebay.com
    _publish(hub, client, policy)
    assert _offer(sandbox, A)["pricingSummary"]["price"]["value"] == shown
    found, error = _statuses(hub)[f"{CHANNEL}:{A}:price:v2"]
    assert found == status
    if status == "failed":
        assert error is not None and "set on the channel after an unconfirmed send" in error and "39.99" in error


def test_a_send_that_never_arrived_is_sent(
    hub: str,  # noqa: F811
    client: ebay.EbayClient,  # noqa: F811
    sandbox: SandboxServer,  # noqa: F811
) -> None:
    _sent_once(hub, client, "40.00")
    _queue(hub, A, "price", {"amount": "41.00", "currency": "PLN"}, version=2)
    sandbox.ebay.faults.arm(outage=100)
    with pytest.raises(TransientError):
        _publish(hub, client, "channel_wins")
    sandbox.ebay.faults.clear()
    client.breaker = CircuitBreaker("ebay")  # the next run's client starts closed
    assert _offer(sandbox, A)["pricingSummary"]["price"]["value"] == "40.00"
    result = _publish(hub, client, "channel_wins")
    assert (result.sent, result.requests) == (1, 1)
    assert _offer(sandbox, A)["pricingSummary"]["price"]["value"] == "41.00"
