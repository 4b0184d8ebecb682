-- Agent Stream schema on SQLite as of migration 3, applied by agent_stream/store/migrations.py
-- inside a transaction (CREATE ... IF NOT EXISTS: migrations 1-3 each re-apply it). Later
-- changes are numbered files of their own; what ran is recorded in schema_migrations.
-- Timestamps are ISO 8601 UTC text ("2026-11-24T15:40:00.123+00:00"), JSON columns are text.

CREATE TABLE IF NOT EXISTS organizations (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    id                     INTEGER PRIMARY KEY,
    organization_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email                  TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash          TEXT NOT NULL,
    is_admin               INTEGER NOT NULL DEFAULT 0,
    monthly_minutes_limit  INTEGER,          -- NULL = unlimited
    max_concurrent_calls   INTEGER,          -- NULL = unlimited
    created_at             TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    key_prefix    TEXT NOT NULL,             -- first characters, for recognising a key
    key_hash      TEXT NOT NULL UNIQUE,      -- sha256 of the whole key
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE IF NOT EXISTS workflows (
    id                       INTEGER PRIMARY KEY,
    uuid                     TEXT NOT NULL UNIQUE,
    organization_id          INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    owner_user_id            INTEGER NOT NULL REFERENCES users(id),
    name                     TEXT NOT NULL,
    status                   TEXT NOT NULL DEFAULT 'draft'
                             CHECK (status IN ('draft', 'published', 'archived')),
    published_definition_id  INTEGER REFERENCES workflow_definitions(id),
    created_at               TEXT NOT NULL,
    updated_at               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS workflows_org ON workflows(organization_id);

CREATE TABLE IF NOT EXISTS workflow_definitions (
    id            INTEGER PRIMARY KEY,
    workflow_id   INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    definition    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    published_at  TEXT,
    UNIQUE (workflow_id, version)
);

CREATE TABLE IF NOT EXISTS telephony_configurations (
    id                INTEGER PRIMARY KEY,
    organization_id   INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    provider          TEXT NOT NULL,
    name              TEXT NOT NULL,
    account_id        TEXT NOT NULL DEFAULT '',   -- the account a stream names (normalized)
    account_key       TEXT,                       -- account_id where a provider allows one
                                                  -- configuration per account, else NULL
    fields            TEXT NOT NULL DEFAULT '{}', -- the other fields, JSON
    secrets           TEXT NOT NULL DEFAULT '',   -- the secret fields, encrypted (crypto.py)
    from_numbers      TEXT NOT NULL DEFAULT '[]',
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (organization_id, provider, account_key)
);
CREATE INDEX IF NOT EXISTS telephony_account
    ON telephony_configurations(organization_id, provider, account_id);

CREATE TABLE IF NOT EXISTS workflow_runs (
    id                INTEGER PRIMARY KEY,
    workflow_id       INTEGER NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    definition_id     INTEGER REFERENCES workflow_definitions(id),
    name              TEXT NOT NULL UNIQUE,   -- WR-AGS-12345678
    call_type         TEXT NOT NULL,
    mode              TEXT NOT NULL,
    state             TEXT NOT NULL
                      CHECK (state IN ('pending', 'running', 'completed', 'failed')),
    initial_context   TEXT NOT NULL DEFAULT '{}',
    gathered_context  TEXT NOT NULL DEFAULT '{}',
    logs              TEXT NOT NULL DEFAULT '{}',
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    ended_at          TEXT,
    duration_seconds  REAL,
    end_reason        TEXT,
    close_code        INTEGER,
    error             TEXT,
    recording_path    TEXT
);
CREATE INDEX IF NOT EXISTS workflow_runs_workflow ON workflow_runs(workflow_id, id DESC);
CREATE INDEX IF NOT EXISTS workflow_runs_state ON workflow_runs(state);

CREATE TABLE IF NOT EXISTS run_transcript_lines (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('agent', 'caller')),
    text         TEXT NOT NULL,
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER NOT NULL,
    interrupted  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, seq)
);

CREATE TABLE IF NOT EXISTS stream_rejections (
    id                INTEGER PRIMARY KEY,
    created_at        TEXT NOT NULL,
    provider          TEXT,
    agent_uuid_short  TEXT NOT NULL,
    workflow_id       INTEGER REFERENCES workflows(id) ON DELETE CASCADE,
    organization_id   INTEGER REFERENCES organizations(id) ON DELETE CASCADE,
    code              INTEGER NOT NULL,
    reason            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_rejections_org ON stream_rejections(organization_id, id DESC);

-- Admin (browser) sign-in: added by migration 2 on databases created at version 1.
CREATE TABLE IF NOT EXISTS sessions (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,         -- sha256 of the cookie value, never the value
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,                -- what every form of this session must carry
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user_id);

CREATE TABLE IF NOT EXISTS login_failures (
    id          INTEGER PRIMARY KEY,
    email       TEXT NOT NULL COLLATE NOCASE,
    ip          TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_key ON login_failures(email, ip, created_at);

-- Added by migration 3: what this database's secrets are encrypted with (crypto.py keeps a
-- check value here) and one-time URLs handed to providers (Plivo's transfer XML).
CREATE TABLE IF NOT EXISTS server_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS one_time_tokens (
    token_hash  TEXT PRIMARY KEY,             -- sha256 of the token, never the token
    purpose     TEXT NOT NULL,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
);
