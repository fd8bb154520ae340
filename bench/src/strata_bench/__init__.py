"""Strata's benchmark toolkit: datasets, workloads, load client, analysis, scenarios."""
