-- Cairn hub schema, version 1. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Times are Unix seconds (BIGINT). JSON documents are TEXT written by the hub.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

-- Registration tokens belong to a project. Only the SHA-256 of the secret is kept;
-- `hint` is the first and last four characters of the secret, for operators.
CREATE TABLE registration_tokens (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL REFERENCES projects(id),
    name           TEXT NOT NULL,
    secret_sha256  TEXT NOT NULL UNIQUE,
    hint           TEXT NOT NULL,
    expires_at     BIGINT,
    max_uses       BIGINT,
    uses           BIGINT NOT NULL DEFAULT 0,
    revoked_at     BIGINT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX registration_tokens_project ON registration_tokens (project_id);

CREATE TABLE hosts (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    tags               TEXT NOT NULL,
    inventory          TEXT NOT NULL,
    status             TEXT NOT NULL,
    -- seq of the event that last changed status/stage/step/error (older events do not)
    status_seq         BIGINT NOT NULL DEFAULT 0,
    current_stage      TEXT NOT NULL DEFAULT '',
    current_step       TEXT NOT NULL DEFAULT '',
    last_error         TEXT NOT NULL DEFAULT '',
    applied_profile    TEXT,
    applied_version    BIGINT,
    last_seq           BIGINT NOT NULL DEFAULT 0,
    credential_sha256  TEXT NOT NULL UNIQUE,
    token_id           TEXT REFERENCES registration_tokens(id),
    registered_at      BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- Profiles: tenant scope when project_id is NULL (visible to every project of the tenant),
-- project scope otherwise. Rows are never updated: a published version is immutable.
CREATE TABLE profiles (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    project_id  TEXT REFERENCES projects(id),
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    body        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX profiles_name_version ON profiles (tenant_id, name, version);

-- One assignment per host and per tag (key=value) in a project. `profile_version` NULL
-- follows the latest version. `rev` orders tag assignments: the newest wins.
CREATE TABLE assignments (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects(id),
    target           TEXT NOT NULL,
    host_id          TEXT REFERENCES hosts(id) ON DELETE CASCADE,
    tag_key          TEXT,
    tag_value        TEXT,
    profile_name     TEXT NOT NULL,
    profile_version  BIGINT,
    rev              BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    UNIQUE (project_id, target)
);

-- Progress events, stored once per (host, seq): re-posted batches are ignored.
CREATE TABLE events (
    host_id      TEXT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    stage        TEXT NOT NULL,
    step         TEXT NOT NULL,
    source       TEXT NOT NULL,
    message      TEXT NOT NULL,
    data         TEXT,
    time         TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (host_id, seq)
);

-- A hub works out of the box: tenant `default` with project `default`.
INSERT INTO tenants (id, name, created_at) VALUES ('t_default', 'default', 0);
INSERT INTO projects (id, tenant_id, name, created_at) VALUES ('p_default', 't_default', 'default', 0);
