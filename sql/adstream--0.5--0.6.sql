/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Issue #12, scaling with workers: ad_stats_minute striped per worker; retention
-- takes the expiry lock only when expiry has work
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

-- The retention job takes the expiry lock (which stalls every worker until
-- the batches in flight commit) only when expiry has something to give up.
/*
 * Whether expire_dedup_state() would give anything up now: a source's mark
 * would move (the same watermark as there), or dedup_log still holds an hour
 * at or before the latest mark.  Read without the expiry lock, so that the
 * retention job takes that lock, which stalls every worker of every source
 * until the batches in flight have committed, only when expiry has work
 * (issue #12).  A stale answer only moves expiry to the next round.  The
 * ids of a dropped source are forgotten by the next expiry that runs (at the
 * latest when the index is 80% full: adstream_dedup_expiry always runs).
 */
CREATE FUNCTION adstream._dedup_expiry_due()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'
AS $$
DECLARE
	v_horizon	interval := current_setting('adstream.dedup_horizon')::interval;
	v_latest	timestamptz;
BEGIN
	IF EXISTS (
		WITH pos AS (
			SELECT p.source_id, p.partition, p.high_watermark
			  FROM adstream.partition_status() p),
		parts AS (
			SELECT s.id, o.max_event_ts, coalesce(o.next_offset >= pos.high_watermark, false) AS caught_up
			  FROM adstream.sources s
			  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
			  LEFT JOIN pos ON pos.source_id = s.id AND pos.partition = o.partition
			 WHERE s.kind = 'ad_events'
			UNION ALL
			SELECT s.id, NULL, coalesce(pos.high_watermark = 0, false)
			  FROM adstream.sources s JOIN pos ON pos.source_id = s.id
			 WHERE s.kind = 'ad_events'
			   AND NOT EXISTS (SELECT 1 FROM adstream.offsets o
								WHERE o.source = s.name AND o.topic = s.topic AND o.partition = pos.partition)),
		wm AS (
			SELECT id, coalesce(min(CASE WHEN NOT caught_up THEN coalesce(max_event_ts, '-infinity') END),
								max(max_event_ts)) AS wm
			  FROM parts GROUP BY id)
		SELECT 1 FROM wm JOIN adstream.sources s ON s.id = wm.id
		 WHERE isfinite(wm.wm)
		   AND date_bin('1 hour', wm.wm - v_horizon, timestamptz '1970-01-01 00:00:00+00')
			   > coalesce(s.dedup_expired_before, '-infinity')) THEN
		RETURN true;
	END IF;
	SELECT max(dedup_expired_before) INTO v_latest FROM adstream.sources WHERE kind = 'ad_events';
	RETURN v_latest IS NOT NULL AND EXISTS (
		SELECT 1 FROM pg_inherits i
		 WHERE i.inhparent = 'adstream.dedup_log'::regclass
		   AND adstream._partition_upper(i.inhrelid) <= v_latest);
END
$$;
COMMENT ON FUNCTION adstream._dedup_expiry_due() IS
	'Whether expire_dedup_state() has anything to give up now (read without its lock; the retention job asks first)';

CREATE OR REPLACE FUNCTION adstream.drop_expired_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
SET timezone = 'UTC'		-- windows, horizon and retention: their days are 24 hours
AS $$
DECLARE
	v_window	interval := greatest(current_setting('adstream.attribution_window')::interval,
									 current_setting('adstream.view_through_window')::interval);
	v_events	timestamptz;
	v_dropped	integer;
BEGIN
	-- Only when there is something to give up: expiry's lock stalls every worker.
	v_dropped := CASE WHEN adstream._dedup_expiry_due() THEN adstream.expire_dedup_state() ELSE 0 END;

	v_events := least(adstream.ad_events_watermark(),
					  (SELECT min(ts) FROM adstream.orders WHERE status = 'waiting'))
				- v_window - current_setting('adstream.dedup_horizon')::interval;
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_events', v_events);

	PERFORM adstream.refresh_rollups();
	v_dropped := v_dropped + adstream._drop_partitions_before('ad_stats_minute',
		now() - current_setting('adstream.minute_retention')::interval);
	PERFORM adstream.expire_rejected_events();
	RETURN v_dropped;
END
$$;
REVOKE ALL ON FUNCTION adstream._dedup_expiry_due() FROM PUBLIC;
