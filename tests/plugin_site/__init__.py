"""The example storage plugin's site directory: a package too, so that import-linter
sees tests.plugin_site.vesper_teststore (pyproject.toml)."""
