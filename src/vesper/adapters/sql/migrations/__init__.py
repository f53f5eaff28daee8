"""Alembic migrations of the SQL stores (script_location `vesper.adapters.sql:migrations`)."""
