"""Strata engine simulator."""
