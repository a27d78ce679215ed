/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Issue #12, scaling with workers: ad_stats_minute rows striped per worker
-------------------------------------------------------------------------------
-- Each worker of a source upserts its own rows (stripe = its index), so that
-- workers never wait for each other's row locks; readers already sum over
-- rows.  With sinks, every worker writes stripe 0 (docs/architecture.md,
-- "Workers in parallel").  Rows counted before 0.6 are stripe 0.
ALTER TABLE adstream.ad_stats_minute ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE adstream.ad_stats_minute DROP CONSTRAINT ad_stats_minute_pkey;
ALTER TABLE adstream.ad_stats_minute ADD PRIMARY KEY (ad_id, window_start, source_id, stripe);
COMMENT ON TABLE adstream.ad_stats_minute IS
	'Deduplicated impressions and clicks per ad, one-minute UTC event-time window, source and stripe; readers sum over sources and stripes';
COMMENT ON COLUMN adstream.ad_stats_minute.stripe IS
	'Which worker of the source counted them (its index; 0 while sinks exist, and before 0.6): rows of one (ad, minute) differ only by it, and are summed';
