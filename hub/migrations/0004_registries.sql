-- Chart registries (docs/protocol.md, "Registries"): Helm repositories and OCI registries
-- with their credentials, at tenant scope (project_id NULL) or project scope.
-- `sealed` is the credentials (JSON) encrypted with ChaCha20-Poly1305 under the hub's
-- registry key file (never in the database), base64 of nonce || ciphertext, bound to the
-- row's id; NULL when the registry needs no credentials. Nothing else here is secret.
CREATE TABLE registries (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    project_id  TEXT REFERENCES projects(id),
    -- `scope_key`: the project id, or '' for tenant scope (one name per scope)
    scope_key   TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    url         TEXT NOT NULL,
    ca_pem      TEXT,
    sealed      TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, scope_key, name)
);

-- Add-on profiles attached to an assignment, in order (docs/protocol.md, "Add-on
-- profiles"): JSON `[{"name": …, "version": N|null}]`; NULL or `[]` for none. A null
-- version follows the add-on profile's latest.
ALTER TABLE assignments ADD COLUMN addons TEXT;
