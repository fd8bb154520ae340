"""The `strata` command: a local cluster (up/down/status) and the demo."""
