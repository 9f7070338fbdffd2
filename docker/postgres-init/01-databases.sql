-- Run once by the postgres image on first start (empty data volume), as POSTGRES_USER (airflow)
-- connected to POSTGRES_DB (airflow, the Airflow metadata database).
-- commerce_hub: the hub (schemas hub, audit); its schema is created by the project's migrations.
-- commerce_erp: the sandbox ERP the demo reads products and stock from.
CREATE DATABASE commerce_hub OWNER airflow;
CREATE DATABASE commerce_erp OWNER airflow;
