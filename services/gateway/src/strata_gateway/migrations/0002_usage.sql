-- The usage ledger: one row per gateway request, written by `python -m strata_gateway.ledger`
-- from the strata.usage.v1.<tenant> stream with INSERT ... ON CONFLICT (request_id) DO NOTHING,
-- so redelivered and re-published records never double-count. No foreign key to tenants:
-- a gateway running without authentication bills a tenant that has no row here.

CREATE TABLE IF NOT EXISTS usage (
    request_id        text PRIMARY KEY,
    tenant_id         text NOT NULL,
    api_key_id        text,
    model             text NOT NULL,
    engine_id         text,
    strategy          text,
    endpoint          text NOT NULL,
    stream            boolean NOT NULL,
    status            integer NOT NULL,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    cached_tokens     integer CHECK (cached_tokens >= 0),
    ttft_ms           double precision,
    latency_ms        double precision NOT NULL,
    started_at        timestamptz NOT NULL,
    error             text,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS usage_tenant_started_idx ON usage (tenant_id, started_at);
CREATE INDEX IF NOT EXISTS usage_api_key_started_idx ON usage (api_key_id, started_at);
