"""Migration scripts, applied in revision order by `vesper.adapters.sql.migrate`."""
