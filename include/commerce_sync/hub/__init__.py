"""The PostgreSQL hub: schema migrations, staging, merge and change detection."""
