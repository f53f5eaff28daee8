"""Use cases that drive the domain through the ports."""
