-- Setup for the statement-level comparison of the rollup marks (BENCHMARKS.md,
-- "The rollup marks' cost on the write path"): run after the migrations in a
-- fresh database, then
--   pgbench -n -f marked.sql -f plain.sql -f returning.sql -T 150 DB
-- pgbench picks one of the three scripts at random for each transaction, so
-- the machine's load falls on all three alike. Each script rewrites one
-- batch of 1024 stored rows with a later end (every row updated), as the
-- flush of open sessions does.
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE src AS
SELECT n, gen_random_uuid() AS user_id, gen_random_uuid() AS agent_id, gen_random_uuid() AS session_id,
       gen_random_uuid() AS workspace_id, 'path'::text AS access_method, 'code-server'::text AS slug_or_port,
       timestamptz '2026-11-25' + n * interval '100 ms' AS session_started_at
FROM generate_series(0, 1024 * 200 - 1) n;
INSERT INTO workspace_app_stats
SELECT user_id, agent_id, session_id, workspace_id, access_method, slug_or_port,
       session_started_at, session_started_at + interval '1 s', 1, 1
FROM src ORDER BY user_id, agent_id, session_id;
-- One row of key-sorted arrays per batch, as the store binds them.
CREATE TABLE batches AS
SELECT n / 1024 AS k,
       array_agg(user_id ORDER BY user_id, agent_id, session_id) u,
       array_agg(agent_id ORDER BY user_id, agent_id, session_id) a,
       array_agg(session_id ORDER BY user_id, agent_id, session_id) s,
       array_agg(workspace_id ORDER BY user_id, agent_id, session_id) w,
       array_agg(access_method ORDER BY user_id, agent_id, session_id) m,
       array_agg(slug_or_port ORDER BY user_id, agent_id, session_id) p,
       array_agg(session_started_at ORDER BY user_id, agent_id, session_id) st,
       array_agg(1::int8) one
FROM src GROUP BY 1;
CREATE UNIQUE INDEX ON batches (k);
VACUUM ANALYZE;
