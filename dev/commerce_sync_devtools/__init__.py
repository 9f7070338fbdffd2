"""Developer tooling: the demo runner and local set-up helpers (not used by the DAGs)."""
