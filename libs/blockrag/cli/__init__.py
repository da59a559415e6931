"""The `blockrag` command line."""
