-- Several processes and hosts on one database (SQLite and PostgreSQL alike).
-- Every serving process is an instance with a heartbeat; a run belongs to the instance
-- that serves its call, so only that instance (at its restart) or a live one (once the
-- heartbeat is 30 s old) ends it when the call was lost.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,           -- host:port:worker, stable across restarts
    pid           INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);
ALTER TABLE workflow_runs ADD COLUMN instance_id TEXT;
CREATE INDEX workflow_runs_open ON workflow_runs(instance_id) WHERE state IN ('pending', 'running');

-- Edits are compare-and-set: a form or PATCH names the revision it was read at, and an
-- edit of anything changed since is refused instead of silently undoing that change.
ALTER TABLE workflows ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE telephony_configurations ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
