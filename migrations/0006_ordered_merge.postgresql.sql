-- RFC 7396 merge patch on PostgreSQL that keeps the order of keys, as SQLite's json_patch
-- does (migration 5's jsonb version sorted them: a run's logs then showed their columns in
-- another order on PostgreSQL). Over json, not jsonb: json keeps key order. The target's
-- keys keep their places, keys new to it follow in the patch's order, a null deletes its key.
DROP FUNCTION IF EXISTS agent_stream_merge_patch(jsonb, jsonb);

CREATE OR REPLACE FUNCTION agent_stream_merge_patch(target json, patch json) RETURNS json
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    merged json;
BEGIN
    IF patch IS NULL OR json_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR json_typeof(target) <> 'object' THEN
        target := '{}'::json;
    END IF;
    SELECT json_object_agg(entry.key, entry.value ORDER BY entry.position) INTO merged FROM (
        SELECT t.key,
               CASE WHEN p.value IS NULL THEN t.value
                    ELSE agent_stream_merge_patch(t.value, p.value) END AS value,
               t.position
        FROM json_each(target) WITH ORDINALITY AS t(key, value, position)
        LEFT JOIN json_each(patch) AS p(key, value) ON p.key = t.key
        WHERE p.value IS NULL OR json_typeof(p.value) <> 'null'
        UNION ALL
        SELECT p.key, agent_stream_merge_patch(NULL, p.value), 1000000000 + p.position
        FROM json_each(patch) WITH ORDINALITY AS p(key, value, position)
        WHERE json_typeof(p.value) <> 'null'
          AND NOT EXISTS (SELECT 1 FROM json_each(target) AS t(key, value) WHERE t.key = p.key)
    ) AS entry;
    RETURN COALESCE(merged, '{}'::json);
END
$$;
