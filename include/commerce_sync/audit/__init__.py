"""Audit: the hash-chained transfer ledger, lineage and trace queries."""
