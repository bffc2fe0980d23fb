-- User activity reads only packed rows: a fleet day keeps, per active user,
-- what a cut of the day at any quarter hour needs (`detail`: distinct
-- minutes per quarter hour over all apps, sessions and requests per start
-- hour; byte layout in `tally_domain::usage::packed`), read only for the
-- days a range cuts. The (day, user) rows it replaces go, with what kept
-- them: the index that found a user's hourly rows of a day, and the list of
-- changed hourly rows (a tick now marks the days of the rows it changed
-- straight in `app_usage_packed_dirty`).

-- NULL: a day packed before this column; reads take such a day's cut from
-- its hourly rows until the next tick rebuilds it.
ALTER TABLE app_usage_fleet_days ADD COLUMN detail bytea;
ALTER TABLE app_usage_fleet_days ALTER COLUMN detail SET STORAGE EXTERNAL;

INSERT INTO app_usage_packed_dirty (day)
SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM app_usage_touched;
DROP TABLE app_usage_touched;
DROP TABLE app_usage_user_days;
DROP INDEX app_usage_hours_user_hour;

-- Every fleet day gets its detail at the next tick.
INSERT INTO app_usage_packed_dirty (day) SELECT day FROM app_usage_fleet_days;
