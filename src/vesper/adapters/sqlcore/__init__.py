"""What SQL stores over SQLAlchemy Core share: the tables, row <-> record conversion,
the reads, cancel/retry and submission planning.

It needs SQLAlchemy and nothing else of vesper's adapters: a third-party store uses it
through `vesper.store` without loading vesper's own SQL stores (`adapters/sql`) or
alembic.
"""
