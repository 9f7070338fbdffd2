"""Developer tooling: the ``commerce-sync-dev`` command, the demo runner and the DAG runner.

Ships in the ``commerce-sync-dev`` distribution (``dev/``), beside the product package: nothing in
``commerce_sync``, the DAGs or the production image imports it (checked by the import contracts).
"""
