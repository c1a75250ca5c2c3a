-- Retry-safe registration (docs/protocol.md, `POST /v1/register`).
-- `registration_key_sha256`: SHA-256 of the key the agent sent with its registration, NULL
-- for agents without one. `credential_salt`: random; the host's credential is derived from
-- the key and this salt, so a retry with the key gets the same credential again. Both are
-- cleared when the host first uses its credential: from then on the key is worthless.
ALTER TABLE hosts ADD COLUMN registration_key_sha256 TEXT;
ALTER TABLE hosts ADD COLUMN credential_salt TEXT;
