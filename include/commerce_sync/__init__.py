"""commerce_sync: audited sync of product data, prices and stock between an ERP, wholesalers and channels.

The package holds all business logic; DAG files under ``dags/`` only wire its functions together.
Every module is importable and testable without a running Airflow.
"""

from __future__ import annotations

__version__ = "0.1.0"
