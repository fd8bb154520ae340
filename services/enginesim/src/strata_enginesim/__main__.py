"""`python -m strata_enginesim` / `strata-enginesim`: run simulated engines, or `calibrate`."""

from __future__ import annotations

import sys

from strata_enginesim.app import build_app
from strata_enginesim.settings import FLAGS, EngineSimSettings
from strata_runtime.service import service_main


def main() -> None:
    """Dispatch `calibrate`, else run the service (settings from env or --flags)."""
    if sys.argv[1:2] == ["calibrate"]:
        from strata_enginesim.calibrate import main as calibrate

        raise SystemExit(calibrate(sys.argv[2:]))
    service_main("enginesim", EngineSimSettings, build_app, flags=FLAGS)


if __name__ == "__main__":
    main()
