\set k random(0, 199)
-- The store's upsert with its marks (crates/adapters-postgres/src/appstats.rs, UPSERT).
WITH up AS (INSERT INTO workspace_app_stats AS t (user_id, agent_id, session_id, workspace_id, access_method, slug_or_port, session_started_at, session_ended_at, requests, sessions)
 SELECT x.* FROM batches b, unnest(b.u, b.a, b.s, b.w, b.m, b.p, b.st, array_fill(clock_timestamp(), ARRAY[1024]), b.one, b.one) x WHERE b.k = :k
 ON CONFLICT (user_id, agent_id, session_id) DO UPDATE
    SET session_ended_at = GREATEST(t.session_ended_at, excluded.session_ended_at), requests = GREATEST(t.requests, excluded.requests), sessions = GREATEST(t.sessions, excluded.sessions)
    WHERE excluded.session_ended_at > t.session_ended_at OR excluded.requests > t.requests OR excluded.sessions > t.sessions
 RETURNING t.session_started_at)
INSERT INTO app_usage_dirty_hours (start_hour) SELECT DISTINCT date_trunc('hour', session_started_at, 'UTC') FROM up;
