"""Strata engine agent: sidecar of vLLM engines (load scraping, KV-event relay, registry).

Entry points: `python -m strata_engineagent`, `strata_engineagent.app.build_app`,
`strata_engineagent.settings.EngineAgentSettings`. Importing this package (or its
`domain`) pulls in no network library.
"""

__all__: list[str] = []
