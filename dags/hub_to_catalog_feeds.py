"""
### Hub → catalog feeds (Google Merchant Center, Meta catalog, Ceneo, and every registered feed kind)

Triggered when channel offers change. One mapped task per enabled feed channel (every channel whose
kind is a feed, from the channel registry) writes its full catalog (Google: RSS 2.0 with the `g:`
namespace; Meta: RSS; Ceneo: `<offers><group><o ...>`), streamed from the hub into a temporary file,
checked by parsing it back (well-formed, required fields, item count = the hub's offers for the
channel minus quarantined ones), then renamed over the published file atomically, only if the content
changed. Out-of-stock offers are kept (a missing item would be removed by Google). With `feed.target`
set, the file is also copied to SFTP or an object store (temporary name, then rename). Each mapped
task reports its own file as its output asset (`feed.<channel id>`), so lineage names the file written.

**Runbook**
- *Failed*: the previous feed file stays in place untouched; read the message (disk full, path not writable,
  configuration, or a failed parse-back check), fix, clear the task.
- Offers failing the pre-publish check (below floor, foreign currency, the format's limits, e.g. Google:
  id ≤ 50, title ≤ 150, description ≤ 5000 characters) are left out and listed in `hub.quarantine`
  (dataset `channel_offer`, source `channel:<id>`); they resolve when a later run writes them.
- The feed path and item count are in the task's return value and in `hub.feed_state`.
- Upgrading: this DAG was called `hub_to_google_feed`; see the README.
- *Deadline missed*: the feeds were still being written 15 minutes (`COMMERCE_SYNC_DEADLINE_HUB_TO_CATALOG_FEEDS`)
  after the run was queued: a large catalog, a slow disk or a slow SFTP/object-store copy; the previous
  files stay published meanwhile.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from commerce_sync import assets
from commerce_sync.airflow_glue import DEFAULT_ARGS, START_DATE, hub_dsn, operator_errors, run_context, sync_deadline


@dag(
    schedule=[assets.HUB_CHANNEL_OFFER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["commerce-sync", "feeds", "publish"],
    doc_md=__doc__,
    deadline=sync_deadline(
        "hub_to_catalog_feeds",
        __doc__,
        default=timedelta(minutes=15),
        what="feed generation",
    ),
)
def hub_to_catalog_feeds() -> None:
    @task
    def list_channels() -> list[str]:
        from commerce_sync import registry
        from commerce_sync.config import load_config

        with operator_errors("channels.yaml"):
            return registry.channels_that(load_config().channels, "publish", family="feed")

    @task(inlets=[assets.HUB_CHANNEL_OFFER, assets.HUB_PRODUCT])
    def write_feed(channel_id: str) -> dict[str, Any]:
        from commerce_sync import registry
        from commerce_sync.channels.feeds import write_feed
        from commerce_sync.config import load_config
        from commerce_sync.lineage import report_output, report_transfer
        from commerce_sync.settings import data_dir

        with operator_errors(f"channel {channel_id!r}"):
            channel = load_config().channel(channel_id)
            # Each mapped instance writes one channel's file, known only at run time.
            report_output(registry.get(channel.kind).asset(channel))
            result = write_feed(hub_dsn(), channel, data_dir(), run_context())
        report_transfer(result.transfer_id)
        return asdict(result)

    write_feed.expand(channel_id=list_channels())


hub_to_catalog_feeds()
