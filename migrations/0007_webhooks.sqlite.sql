-- Run webhooks (CONTRACT section 9): an organization's receivers, and every delivery of a
-- run event to one of them, kept until it is accepted or has been retried for 24 hours.
CREATE TABLE webhooks (
    id               INTEGER PRIMARY KEY,
    organization_id  INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,               -- JSON list: run.started, run.completed, run.failed
    secret           TEXT NOT NULL,               -- sealed with the secret key
    active           INTEGER NOT NULL DEFAULT 1,  -- 0: paused, no new deliveries, none sent
    revision         INTEGER NOT NULL DEFAULT 1,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX webhooks_organization ON webhooks(organization_id);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    webhook_id       INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    run_id           INTEGER NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    event            TEXT NOT NULL,
    event_id         TEXT NOT NULL UNIQUE,        -- the body's "id" and the Idempotency-Key
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,               -- when the run event happened
    next_attempt_at  TEXT,                        -- pending: when it is due
    claimed_by       TEXT,                        -- the instance sending it now ...
    claimed_until    TEXT,                        -- ... until then (then anyone may)
    body             TEXT,                        -- the JSON sent, fixed at the first attempt
    status_code      INTEGER,                     -- of the last attempt
    latency_ms       INTEGER,
    error            TEXT,
    last_attempt_at  TEXT,
    delivered_at     TEXT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_of_webhook ON webhook_deliveries(webhook_id, id);

-- A run's state change and its deliveries are one write: the deliveries are inserted by the
-- statement that changes the state (start -> run.started, its end -> run.completed or
-- run.failed, whoever writes it), in its transaction, so a crash loses neither. No webhook
-- subscribed: one index probe.
CREATE TRIGGER workflow_runs_webhook_events AFTER UPDATE OF state ON workflow_runs
WHEN NEW.state IN ('running', 'completed', 'failed') AND NEW.state IS NOT OLD.state
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, run_id, event, event_id, created_at, next_attempt_at)
    SELECT h.id, NEW.id, e.event, lower(hex(randomblob(16))), e.at, e.at
    FROM (SELECT CASE NEW.state WHEN 'running' THEN 'run.started'
                                WHEN 'completed' THEN 'run.completed' ELSE 'run.failed' END AS event,
                 COALESCE(CASE WHEN NEW.state = 'running' THEN NEW.started_at ELSE NEW.ended_at END,
                          NEW.created_at) AS at) AS e
    JOIN workflows w ON w.id = NEW.workflow_id
    JOIN webhooks h ON h.organization_id = w.organization_id AND h.active = 1
    WHERE EXISTS (SELECT 1 FROM json_each(h.events) AS s WHERE s.value = e.event);
END;
