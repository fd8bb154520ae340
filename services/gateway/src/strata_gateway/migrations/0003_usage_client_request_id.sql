-- The client's x-request-id, kept beside the gateway's own request id. The ledger key stays
-- the gateway's id, unique per request: a client that sends the same x-request-id twice is
-- billed twice, not deduplicated away.

ALTER TABLE usage ADD COLUMN IF NOT EXISTS client_request_id text;

CREATE INDEX IF NOT EXISTS usage_client_request_idx ON usage (client_request_id) WHERE client_request_id IS NOT NULL;
