"""Run one step of the sync in a child process that the fault test kills at a chosen point.

``python -m tests.faults.child STEP PAUSE MARKER``: the environment (hub, connections, data directory) is
inherited from the test. ``PAUSE`` says where the child stops and waits to be killed, after touching
``MARKER`` so the test knows it got there:

- ``copy``: after a few rows of the first COPY were streamed (the server holds a half-filled COPY);
- ``recorded``: after the marketplace applied a request and the publisher read its answer, before the
  outcomes are written (the channel has the change, the hub does not know yet);
- ``booked``: after the ERP booked the first order handed to it, before the hub records the hand-off;
- ``none``: nowhere; the test blocks the step with a lock and kills it while it waits.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from commerce_sync.channels import marketplace
from tests.faults.world import STEP_FUNCTIONS

ROWS_BEFORE_PAUSE = 5


def _pause(marker: Path) -> None:
    marker.write_text("paused", encoding="utf-8")
    while True:  # until SIGKILL
        time.sleep(60)


def main(step: str, pause: str, marker: Path) -> None:
    if pause == "copy":
        original = psycopg.Copy.write_row
        written = 0

        def write_row(self: Any, row: Any) -> None:
            nonlocal written
            original(self, row)
            written += 1
            if written == ROWS_BEFORE_PAUSE:
                _pause(marker)

        psycopg.Copy.write_row = write_row  # type: ignore[method-assign]
    elif pause == "recorded":

        def record(self: Any, conn: Any, channel_id: str, request: Any, outcomes: Any) -> None:
            _pause(marker)

        marketplace._Run.record = record  # type: ignore[method-assign]
    elif pause == "booked":
        from commerce_sync.orders import erp

        book = erp.SqlOrderWriter.book

        def booked(self: Any, order: Any) -> Any:
            answer = book(self, order)
            _pause(marker)
            return answer

        erp.SqlOrderWriter.book = booked  # type: ignore[method-assign]
    STEP_FUNCTIONS[step](os.environ["HUB_DATABASE_URL"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
