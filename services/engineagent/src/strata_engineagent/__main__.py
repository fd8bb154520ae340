"""`python -m strata_engineagent`: run the engine agent (`--help` lists its settings)."""

from strata_engineagent.app import build_app
from strata_engineagent.settings import EngineAgentSettings
from strata_runtime import service_main

if __name__ == "__main__":
    service_main("engineagent", EngineAgentSettings, build_app)
