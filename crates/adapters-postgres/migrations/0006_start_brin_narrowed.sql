-- The BRIN on the raw rows' start, rebuilt from the rows held now. Until
-- this release a range's summary only widened: purged rows stayed in it,
-- and once the heap reused their space for new rows the range matched
-- every start between the oldest row it ever held and the newest, so a
-- read of one recent hour and the purge's own search read most of the
-- table. Each purge round now summarizes again the ranges it deleted rows
-- from (`usage/retention.rs`); this narrows the summaries a database
-- already holds. It reads the table once and holds off writes to it
-- meanwhile (writers wait and retry).
REINDEX INDEX workspace_app_stats_started_brin;
