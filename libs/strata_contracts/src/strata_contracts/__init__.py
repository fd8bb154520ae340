"""Strata's wire contracts: subjects, message models, codec and block hashing.

This package imports nothing else of Strata's; every service depends on it.
"""

from strata_contracts.messages.base import decode, encode

__all__ = ["decode", "encode"]
