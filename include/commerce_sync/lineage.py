"""OpenLineage for commerce-sync: real datasets on every task event, joined to the audit ledger.

Two pieces plug into ``apache-airflow-providers-openlineage`` (2.20.3) through its configuration:

- ``[openlineage] extractors = commerce_sync.lineage.CommerceSyncTaskExtractor``: the extractor for
  TaskFlow tasks (``_PythonDecoratedOperator``). It turns the task's declared ``inlets``/``outlets``
  (Assets from :mod:`commerce_sync.assets`) into OpenLineage datasets, first with the provider's own
  converters (``postgres://``, ``file://``) and, for ``http(s)://`` which the provider drops, as namespace
  ``https://<host>`` and name ``/<path>``. It adds the datasets a task reported at run time with
  :func:`report_input`/:func:`report_output` (the supplier feed of a mapped supplier task, which is
  configuration and so unknown at parse time). Without it the provider would fall back to the same
  inlets/outlets but drop the Allegro endpoint and the runtime supplier feeds.
- ``[openlineage] custom_run_facets = commerce_sync.lineage.transfer_run_facets``: adds
  :class:`CommerceSyncTransferRunFacet` (key ``commerce_sync_transfer``) with the ``audit.transfer`` ids the
  task wrote, so an OpenLineage run and its ledger rows join on ``transfer_id``.

How the transfer ids travel: a task calls :func:`report_transfer` with each ``transfer_id`` it wrote
(from its result, or from the ``Transfer`` it created, before the work starts, so that a failing task's
FAIL event still carries the id of its failed ledger row). The ids are kept in a process-local registry
keyed by the task instance (dag, run, task, map index, try). The provider emits task events from the task's
own process (or a fork of it, which inherits the registry), so no database or XCom round trip is needed.
START events are emitted before the task body runs and so carry no transfer facet. A task whose library
call fails before returning its result (ERP, supplier, pricing, feed writers create their ``Transfer``
internally) has its failed ledger row written but its FAIL event carries no id; the ledger row still names
the run (dag_id, run_id, task_id, map_index, try_number), which joins to the OpenLineage ``airflow`` facet.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import attr
from airflow.providers.openlineage.extractors.base import BaseExtractor, OperatorLineage
from airflow.sdk import Asset
from openlineage.client.event_v2 import Dataset
from openlineage.client.facet_v2 import RunFacet

log = logging.getLogger(__name__)

TRANSFER_FACET_KEY = "commerce_sync_transfer"
TRANSFER_FACET_SCHEMA_URL = (
    "https://github.com/commerce-sync/commerce-sync/blob/main/include/commerce_sync/lineage.py"
    "#CommerceSyncTransferRunFacet"
)

TaskKey = tuple[str, str, str, int, int]


@attr.define
class CommerceSyncTransferRunFacet(RunFacet):
    """The ``audit.transfer`` rows a task run wrote: join OpenLineage runs to the audit ledger."""

    transfer_ids: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return TRANSFER_FACET_SCHEMA_URL


@dataclass
class _Reported:
    transfer_ids: list[str] = field(default_factory=list)
    inputs: list[Asset] = field(default_factory=list)
    outputs: list[Asset] = field(default_factory=list)


_REGISTRY: dict[TaskKey, _Reported] = {}


def task_key(ti: Any) -> TaskKey:
    """The registry key of a task instance (RuntimeTaskInstance or anything with the same attributes)."""
    map_index = getattr(ti, "map_index", -1)
    return (
        str(ti.dag_id),
        str(ti.run_id),
        str(ti.task_id),
        -1 if map_index is None else int(map_index),
        int(getattr(ti, "try_number", 0) or 0),
    )


def _current_key() -> TaskKey:
    from airflow.sdk import get_current_context

    return task_key(get_current_context()["ti"])


def _entry(key: TaskKey | None) -> _Reported:
    return _REGISTRY.setdefault(key if key is not None else _current_key(), _Reported())


def report_transfer(transfer_id: uuid.UUID | str, *, key: TaskKey | None = None) -> None:
    """Record that the running task wrote ledger row ``transfer_id`` (idempotent)."""
    ids = _entry(key).transfer_ids
    if str(transfer_id) not in ids:
        ids.append(str(transfer_id))


def report_input(asset: Asset, *, key: TaskKey | None = None) -> None:
    """Record a dataset the running task read that is only known at run time."""
    _entry(key).inputs.append(asset)


def report_output(asset: Asset, *, key: TaskKey | None = None) -> None:
    """Record a dataset the running task wrote that is only known at run time."""
    _entry(key).outputs.append(asset)


def reported(ti: Any) -> _Reported:
    """What the task instance reported so far (empty if nothing)."""
    return _REGISTRY.get(task_key(ti), _Reported())


def transfer_ids_facet(transfer_ids: Iterable[str]) -> dict[str, RunFacet]:
    """``{TRANSFER_FACET_KEY: facet}`` for the given ids, or ``{}`` if there are none."""
    ids = list(dict.fromkeys(str(t) for t in transfer_ids))
    return {TRANSFER_FACET_KEY: CommerceSyncTransferRunFacet(transfer_ids=ids)} if ids else {}


def transfer_run_facets(ti: Any, ti_state: Any) -> dict[str, RunFacet]:
    """``custom_run_facets`` hook: the ledger transfer ids of this task instance.

    Signature required by the provider: ``(TaskInstance, TaskInstanceState) -> dict[str, RunFacet]``
    (``get_user_provided_run_facets`` in ``airflow/providers/openlineage/utils/utils.py``).
    """
    return transfer_ids_facet(reported(ti).transfer_ids)


def dataset_for_uri(uri: str) -> Dataset | None:
    """OpenLineage dataset for an ``http(s)://`` or ``sftp://`` URI: namespace ``scheme://host[:port]``, name the path.

    This follows the provider's object-storage convention (``s3://bucket`` + key, ``file://host`` + path);
    the OpenLineage naming spec has no HTTP or SFTP entry. Other schemes return None.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https", "sftp") or not parts.netloc:
        return None
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path or "/")


def asset_to_dataset(asset: Any) -> Dataset | None:
    """An Asset (or an OpenLineage Dataset) as an OpenLineage dataset; None if it cannot be named."""
    if isinstance(asset, Dataset):
        return asset
    if not isinstance(asset, Asset):
        return None
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    converted = translate_airflow_asset(asset, None)
    if converted is not None:
        return Dataset(namespace=converted.namespace, name=converted.name, facets=converted.facets)
    dataset = dataset_for_uri(asset.uri)
    if dataset is None:
        log.warning("Asset %r (%s) has no OpenLineage dataset form; left out of lineage", asset.name, asset.uri)
    return dataset


def _datasets(assets: Iterable[Any]) -> list[Dataset]:
    seen: set[tuple[str, str]] = set()
    result = []
    for asset in assets:
        dataset = asset_to_dataset(asset)
        if dataset is not None and (dataset.namespace, dataset.name) not in seen:
            seen.add((dataset.namespace, dataset.name))
            result.append(dataset)
    return result


class CommerceSyncTaskExtractor(BaseExtractor):
    """Lineage of TaskFlow tasks: declared inlets/outlets plus the datasets reported at run time."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        """The operator classes this extractor serves (every ``@task``)."""
        return ["_PythonDecoratedOperator"]

    def _lineage(self, ti: Any = None) -> OperatorLineage:
        extra = reported(ti) if ti is not None else _Reported()
        return OperatorLineage(
            inputs=_datasets([*(self.operator.inlets or []), *extra.inputs]),
            outputs=_datasets([*(self.operator.outlets or []), *extra.outputs]),
        )

    def _execute_extraction(self) -> OperatorLineage | None:
        """START event: the declared datasets (run-time ones are not known yet)."""
        return self._lineage()

    def extract_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """COMPLETE event: declared and reported datasets."""
        return self._lineage(task_instance)

    def extract_on_failure(self, task_instance: Any) -> OperatorLineage | None:
        """FAIL event: declared and reported datasets (what the task meant to read and write)."""
        return self._lineage(task_instance)
