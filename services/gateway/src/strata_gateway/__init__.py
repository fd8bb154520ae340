"""Strata gateway."""
