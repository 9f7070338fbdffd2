"""Demo and test fixtures: catalog, ERP database, supplier feeds, an SFTP server and marketplace simulators.

Ships in the ``commerce-sync-dev`` distribution (``dev/``), beside the product package: nothing in
``commerce_sync``, the DAGs or the production image imports it (checked by the import contracts).
"""
