-- The BRIN on the raw rows' start is kept narrow under retention. Until
-- this release a range's summary only widened: purged rows stayed in it,
-- and once the heap reused their space for new rows the range matched
-- every start between the oldest row it ever held and the newest, so a
-- read of one recent hour and the purge's own search read most of the
-- table. Each purge round now notes the heap blocks of the rows it deletes,
-- and the next round summarizes their ranges again (`usage/retention.rs`).
CREATE TABLE app_stats_purged_blocks (
    block bigint NOT NULL
);

-- Narrows the summaries a database already holds: the index rebuilt from
-- the rows held now (one read of the table; writes to it wait meanwhile).
REINDEX INDEX workspace_app_stats_started_brin;
