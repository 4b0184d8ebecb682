-- Two functions that let one statement do on PostgreSQL what SQLite's single writer does.

-- RFC 7396 merge patch on PostgreSQL, as SQLite's json_patch does it: nested objects merged
-- key by key, a null deleting its key, anything else replacing. `jsonb ||` would replace a
-- nested object whole. Run writes merge with it in one statement (store/runs.py).
CREATE OR REPLACE FUNCTION agent_stream_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    patch_key text;
    patch_value jsonb;
    merged jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        merged := '{}'::jsonb;
    ELSE
        merged := target;
    END IF;
    FOR patch_key, patch_value IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(patch_value) = 'null' THEN
            merged := merged - patch_key;
        ELSE
            merged := jsonb_set(merged, ARRAY[patch_key],
                                agent_stream_merge_patch(merged -> patch_key, patch_value));
        END IF;
    END LOOP;
    RETURN merged;
END
$$;

-- Whether an owner has a free concurrent-call slot, for the INSERT of a new run that calls
-- it (store/runs.py): the owner's row is locked first, and the count that follows sees every
-- run committed by those who held the lock before (a function's queries each take a fresh
-- snapshot; one statement's subquery would not). The lock is released when the INSERT's own
-- transaction commits, so one round trip holds it. Runs in `over_ids` are over though their
-- end is not written yet: they hold no slot. No limit (NULL) always has one.
CREATE OR REPLACE FUNCTION agent_stream_has_free_slot(owner_id bigint, over_ids bigint[])
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    max_calls integer;
BEGIN
    SELECT max_concurrent_calls INTO max_calls FROM users WHERE id = owner_id FOR UPDATE;
    IF max_calls IS NULL THEN
        RETURN true;
    END IF;
    RETURN (SELECT COUNT(*) FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
            WHERE w.owner_user_id = owner_id AND r.state IN ('pending', 'running')
              AND NOT (r.id = ANY(over_ids))) < max_calls;
END
$$;
