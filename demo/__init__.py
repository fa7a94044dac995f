"""`make demo`: the whole flow as local processes, no Docker, no cluster (`python -m demo`)."""
