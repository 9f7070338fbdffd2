"""The pure parts of commerce_sync.lineage: dataset naming, the transfer facet, the run-time registry."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset
from openlineage.client.serde import Serde

from commerce_sync import assets, lineage


@pytest.mark.parametrize(
    ("asset", "namespace", "name"),
    [
        (assets.HUB_PRODUCT, "postgres://hub_db:5432", "commerce_hub.hub.product"),
        (assets.HUB_CHANNEL_OFFER, "postgres://hub_db:5432", "commerce_hub.hub.channel_offer"),
        (assets.ERP_PRODUCTS, "postgres://erp_db:5432", "commerce_erp.erp.products"),
        (
            assets.feed_file("google", "feeds/google_merchant.xml"),
            "file://commerce-sync-data",
            "/feeds/google_merchant.xml",
        ),
        (assets.feed_file("meta", "/srv/feeds/meta.xml"), "file", "/srv/feeds/meta.xml"),
        (assets.ALLEGRO_OFFERS, "https://api.allegro.pl", "/sale/offers"),
        (
            assets.supplier_feed("acme", "http", "/feeds/acme.xml", "supplier_acme"),
            "https://supplier_acme",
            "/feeds/acme.xml",
        ),
        (
            assets.supplier_feed("local", "file", "incoming/local.csv"),
            "file://commerce-sync-data",
            "/incoming/local.csv",
        ),
    ],
)
def test_assets_become_openlineage_datasets(asset: Asset, namespace: str, name: str) -> None:
    dataset = lineage.asset_to_dataset(asset)
    assert dataset is not None
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_scheduling_asset_names_match_lineage_names() -> None:
    assert assets.HUB_PRODUCT.name == "commerce_hub.hub.product"
    assert assets.HUB_SUPPLIER_OFFER.name == "commerce_hub.hub.supplier_offer"
    assert assets.HUB_CHANNEL_OFFER.name == "commerce_hub.hub.channel_offer"


def test_unknown_scheme_is_left_out() -> None:
    assert lineage.asset_to_dataset(Asset(name="x", uri="hub://commerce_sync/hub/product")) is None
    assert lineage.asset_to_dataset("not an asset") is None
    assert lineage.dataset_for_uri("ftp://host/file") is None
    sftp = lineage.dataset_for_uri("sftp://supplier_delta/outgoing/catalog.xml")
    assert sftp is not None
    assert (sftp.namespace, sftp.name) == ("sftp://supplier_delta", "/outgoing/catalog.xml")


def test_supplier_http_feed_needs_a_connection() -> None:
    with pytest.raises(ValueError, match="connection id"):
        assets.supplier_feed("acme", "http", "/feeds/acme.xml")


def test_transfer_facet_serialises_with_its_ids() -> None:
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    facets = lineage.transfer_ids_facet([ids[0], ids[1], ids[0]])
    facet = facets[lineage.TRANSFER_FACET_KEY]
    assert isinstance(facet, lineage.CommerceSyncTransferRunFacet)
    data = Serde.to_dict(facet)
    assert data["transfer_ids"] == ids
    assert data["_schemaURL"] == lineage.TRANSFER_FACET_SCHEMA_URL
    assert data["_producer"]
    assert lineage.transfer_ids_facet([]) == {}


def _ti(task_id: str, map_index: int = -1) -> SimpleNamespace:
    return SimpleNamespace(dag_id="d", run_id=f"r-{uuid.uuid4()}", task_id=task_id, map_index=map_index, try_number=1)


def test_reported_transfers_reach_the_custom_facet_of_that_task_instance_only() -> None:
    ti, other = _ti("write_feed", 0), _ti("write_feed", 1)
    transfer_id = uuid.uuid4()
    lineage.report_transfer(transfer_id, key=lineage.task_key(ti))
    lineage.report_transfer(str(transfer_id), key=lineage.task_key(ti))
    facet = lineage.transfer_run_facets(ti, "success")[lineage.TRANSFER_FACET_KEY]
    assert isinstance(facet, lineage.CommerceSyncTransferRunFacet)
    assert facet.transfer_ids == [str(transfer_id)]
    assert lineage.transfer_run_facets(other, "success") == {}


def test_extractor_combines_declared_and_reported_datasets() -> None:
    ti = _ti("sync_supplier_feed", 0)
    feed = assets.supplier_feed("acme", "http", "/feeds/acme.xml", "supplier_acme")
    lineage.report_input(feed, key=lineage.task_key(ti))
    operator = SimpleNamespace(
        inlets=[], outlets=[assets.HUB_SUPPLIER_OFFER, assets.HUB_QUARANTINE, assets.HUB_SUPPLIER_OFFER]
    )
    extractor = lineage.CommerceSyncTaskExtractor(operator)
    start = extractor.extract()
    assert start is not None and start.inputs == []
    complete = extractor.extract_on_complete(ti)
    assert complete is not None
    assert [(d.namespace, d.name) for d in complete.inputs] == [("https://supplier_acme", "/feeds/acme.xml")]
    assert [d.name for d in complete.outputs] == ["commerce_hub.hub.supplier_offer", "commerce_hub.hub.quarantine"]
    assert "_PythonDecoratedOperator" in lineage.CommerceSyncTaskExtractor.get_operator_classnames()
