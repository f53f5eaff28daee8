"""The pure core of vesper: jobs, their states, retry policy, ordering and leases.

Standard library and attrs only; no I/O and no clock reads (time is an argument).
"""
