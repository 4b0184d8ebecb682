-- Reads that must not grow with history (both databases, the same SQL).
-- The Overview: one organization's runs of the last 30 days, by workflow and time.
CREATE INDEX workflow_runs_created ON workflow_runs(workflow_id, created_at);
-- The webhook sender: which webhooks have attempts under way, from the pending rows only.
CREATE INDEX webhook_deliveries_claimed ON webhook_deliveries(claimed_until, webhook_id)
    WHERE state = 'pending';
-- The hourly prune of deliveries accepted or given up on, 30 days old.
CREATE INDEX webhook_deliveries_done ON webhook_deliveries(created_at) WHERE state <> 'pending';
