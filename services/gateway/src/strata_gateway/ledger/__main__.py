"""`python -m strata_gateway.ledger`: run the usage ledger writer (`--help` lists its settings)."""

from strata_gateway.ledger.app import build_app
from strata_gateway.ledger.settings import LedgerSettings
from strata_runtime import service_main

if __name__ == "__main__":
    service_main("gateway.ledger", LedgerSettings, build_app)
