-- Tenants and their API keys. Only the SHA-256 of a key's secret is stored, never the secret.
-- Limits: NULL = unlimited. A key's rpm/tpm/max_concurrency/default_strategy, when set,
-- override its tenant's for that key; the tenant's own limits also cap all its keys together.

CREATE TABLE IF NOT EXISTS tenants (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_=-]{1,64}$'),  -- a NATS subject token
    name             text NOT NULL,
    default_strategy text,
    rpm              integer CHECK (rpm > 0),
    tpm              integer CHECK (tpm > 0),
    max_concurrency  integer CHECK (max_concurrency > 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id               text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,32}$'),  -- the <id> of sk-strata-<id>-<secret>
    tenant_id        text NOT NULL REFERENCES tenants (id),
    prefix           text NOT NULL,              -- shown in listings: sk-strata-<id>-<first 4 chars of the secret>
    secret_sha256    bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    allowed_models   text[],                     -- NULL = every model
    default_strategy text,
    rpm              integer CHECK (rpm > 0),
    tpm              integer CHECK (tpm > 0),
    max_concurrency  integer CHECK (max_concurrency > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);

CREATE INDEX IF NOT EXISTS api_keys_tenant_id_idx ON api_keys (tenant_id);
