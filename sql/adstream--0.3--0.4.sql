/* adstream--0.3--0.4.sql -- dedup in a shared-memory index; dead-letter retention */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.4'" to load this file. \quit

-------------------------------------------------------------------------------
-- Dedup: a shared-memory index of event ids (src/dedup_index.c), made
-- durable by one row of ids per batch and event-time hour.  It replaces
-- dedup_state, whose per-id B-tree inserts were most of a batch's cost.
-------------------------------------------------------------------------------

CREATE TABLE adstream.dedup_log (
	source_id	integer NOT NULL,
	hour		timestamptz NOT NULL,	-- event-time hour of the ids
	ids			bytea NOT NULL			-- 16-byte event ids, concatenated in id order
) PARTITION BY RANGE (hour);
COMMENT ON TABLE adstream.dedup_log IS
	'Event ids claimed per source and event-time hour within adstream.dedup_horizon; the durable form of the shared-memory dedup index';

INSERT INTO adstream.partitioned_tables VALUES ('dedup_log', interval '1 hour', 100);

-- Carry the ids remembered so far over, in rows of at most 100,000 ids.
SELECT adstream.ensure_partitions('dedup_log',
	array_agg(DISTINCT date_bin('1 hour', event_ts, timestamptz '1970-01-01 00:00:00+00'))) FROM adstream.dedup_state;
INSERT INTO adstream.dedup_log (source_id, hour, ids)
SELECT source_id, hour, string_agg(uuid_send(event_id), ''::bytea ORDER BY event_id)
  FROM (SELECT source_id, event_id,
			   date_bin('1 hour', event_ts, timestamptz '1970-01-01 00:00:00+00') AS hour,
			   (row_number() OVER (PARTITION BY source_id, date_bin('1 hour', event_ts, timestamptz '1970-01-01 00:00:00+00')
								   ORDER BY event_id) - 1) / 100000 AS chunk
		  FROM adstream.dedup_state) d
 GROUP BY source_id, hour, chunk;

-- Partitions are data, not part of the extension (pg_dump must save them),
-- like those the workers create.
DO $$
DECLARE
	v_rel	regclass;
BEGIN
	FOR v_rel IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'adstream.dedup_log'::regclass LOOP
		EXECUTE format('ALTER EXTENSION adstream DROP TABLE %s', v_rel);
	END LOOP;
END
$$;

DROP TABLE adstream.dedup_state;
DELETE FROM adstream.partitioned_tables WHERE name = 'dedup_state';

CREATE FUNCTION adstream._dedup_forget(p_before timestamptz)
RETURNS bigint LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_forget';
REVOKE ALL ON FUNCTION adstream._dedup_forget(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION adstream._dedup_forget(timestamptz) IS
	'Internal: forgets the dedup index entries of the hours ending at or before the given time; returns how many';

CREATE FUNCTION adstream.dedup_index_status(
	OUT capacity bigint, OUT entries bigint, OUT shared_memory_bytes bigint, OUT ready boolean)
RETURNS record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_index_status';
COMMENT ON FUNCTION adstream.dedup_index_status() IS
	'Capacity (adstream.dedup_index_size) and use of the shared-memory dedup index; ready once rebuilt after a start';
REVOKE ALL ON FUNCTION adstream.dedup_index_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.dedup_index_status() TO adstream_reader;

/*
 * adstream's own locks, in a lock space that pg_advisory_lock() cannot
 * reach: before, any role that could connect could take the advisory lock
 * the batches wait for, and stall ingestion.
 */
CREATE FUNCTION adstream._lock(p_name text, p_key integer, p_exclusive boolean)
RETURNS void LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_lock';
REVOKE ALL ON FUNCTION adstream._lock(text, integer, boolean) FROM PUBLIC;
COMMENT ON FUNCTION adstream._lock(text, integer, boolean) IS
	'Internal: takes one of adstream''s own transaction-level locks (shared or exclusive), waiting';

CREATE OR REPLACE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_cutoff	timestamptz;
	v_dropped	integer;
BEGIN
	SELECT min(wm) - current_setting('adstream.dedup_horizon')::interval INTO v_cutoff
	  FROM (SELECT max(o.max_event_ts) AS wm
			  FROM adstream.offsets o JOIN adstream.sources s ON s.name = o.source
			 WHERE s.kind = 'ad_events'
			 GROUP BY o.source HAVING max(o.max_event_ts) IS NOT NULL) w;
	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);
	v_dropped := adstream._drop_partitions_before('dedup_log', v_cutoff);
	-- Last, once the drops are done: the index forgets the same hours.
	IF v_cutoff IS NOT NULL THEN
		PERFORM adstream._dedup_forget(v_cutoff);
	END IF;
	RETURN v_dropped;
END
$$;
COMMENT ON FUNCTION adstream.expire_dedup_state() IS
	'Drops dedup_log partitions older than every ad-events source''s watermark minus adstream.dedup_horizon, and forgets their ids in the dedup index; returns how many partitions';

-------------------------------------------------------------------------------
-- Dead letters: retention
-------------------------------------------------------------------------------

/*
 * Deletes dead letters received longer than adstream.rejected_retention ago,
 * in rounds of p_batch rows so that no transaction grows large.  Dead letters
 * stay bounded by rate x retention x (row + first 8 KiB of the message).
 */
CREATE FUNCTION adstream.expire_rejected_events(p_batch integer DEFAULT 50000)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_before	timestamptz := now() - current_setting('adstream.rejected_retention')::interval;
	v_n			bigint;
	v_total		bigint := 0;
BEGIN
	IF p_batch < 1 THEN
		RAISE EXCEPTION 'p_batch must be positive'
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the number of rows to delete per round.';
	END IF;
	LOOP
		DELETE FROM adstream.rejected_events r
		 WHERE r.ctid = ANY (ARRAY(SELECT ctid FROM adstream.rejected_events
									WHERE received_at < v_before LIMIT p_batch));
		GET DIAGNOSTICS v_n = ROW_COUNT;
		v_total := v_total + v_n;
		EXIT WHEN v_n < p_batch;
	END LOOP;
	RETURN v_total;
END
$$;
COMMENT ON FUNCTION adstream.expire_rejected_events(integer) IS
	'Deletes dead letters older than adstream.rejected_retention; returns how many';
REVOKE ALL ON FUNCTION adstream.expire_rejected_events(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION adstream.drop_expired_partitions()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '2s'
AS $$
DECLARE
	v_window	interval := greatest(current_setting('adstream.attribution_window')::interval,
									 current_setting('adstream.view_through_window')::interval);
	v_events	timestamptz;
	v_dropped	integer;
BEGIN
	v_dropped := adstream.expire_dedup_state();

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
COMMENT ON FUNCTION adstream.drop_expired_partitions() IS
	'Drops expired partitions of dedup_log, ad_events and ad_stats_minute (returns how many), and dead letters older than adstream.rejected_retention';

-------------------------------------------------------------------------------
-- Autovacuum settings for the tables the workers write all the time.
-- PostgreSQL 15 keeps no storage parameters on a partitioned table, so the
-- partitions get theirs from partitioned_tables when they are created.
-------------------------------------------------------------------------------

ALTER TABLE adstream.partitioned_tables ADD COLUMN storage_options text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN adstream.partitioned_tables.storage_options IS
	'Storage parameters besides fillfactor given to each new partition';
-- The minute table is updated in place (HOT): vacuum a partition once 1% of
-- it is dead, not the default 20% of a whole day's rows.  The insert-only
-- tables are dropped whole within hours: no vacuum for inserts.
UPDATE adstream.partitioned_tables SET storage_options = CASE name
	WHEN 'ad_stats_minute' THEN ARRAY['autovacuum_vacuum_scale_factor=0.01', 'autovacuum_vacuum_threshold=5000',
									  'autovacuum_analyze_scale_factor=0.02']
	ELSE ARRAY['autovacuum_vacuum_insert_threshold=-1'] END;
DO $$
DECLARE
	v_part	record;
BEGIN
	FOR v_part IN
		SELECT i.inhrelid::regclass AS rel, t.storage_options
		  FROM adstream.partitioned_tables t JOIN pg_inherits i ON i.inhparent = format('adstream.%I', t.name)::regclass
	LOOP
		EXECUTE format('ALTER TABLE %s SET (%s)', v_part.rel, array_to_string(v_part.storage_options, ', '));
	END LOOP;
END
$$;

-- Queues and per-partition rows, updated or deleted constantly: vacuum them
-- by row count, without cost delay.
ALTER TABLE adstream.offsets SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
								  autovacuum_vacuum_cost_delay = 0);
ALTER TABLE adstream.sinks SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
								autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE adstream.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
								 autovacuum_vacuum_cost_delay = 0);
ALTER TABLE adstream.rollup_pending SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
										 autovacuum_vacuum_cost_delay = 0);
ALTER TABLE adstream.rejected_events SET (autovacuum_vacuum_scale_factor = 0.05,
										  autovacuum_vacuum_insert_scale_factor = 0.05);

-------------------------------------------------------------------------------
-- Partition creation: two workers creating the same partition at once could
-- both miss the other's: the advisory lock did not make the second see the
-- first's commit ("relation ... already exists", then a retried batch).
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION adstream.ensure_partitions(p_table text, p_times timestamptz[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_grain		interval;
	v_fill		integer;
	v_options	text[];
	v_lo		timestamptz;
	v_name		text;
	v_created	integer := 0;
BEGIN
	SELECT grain, fillfactor, storage_options INTO v_grain, v_fill, v_options
	  FROM adstream.partitioned_tables WHERE name = p_table;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'table "%" is not partitioned by adstream', p_table
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'See adstream.partitioned_tables.';
	END IF;

	-- Usually every partition exists: answer without taking the lock, which
	-- would otherwise serialise all workers until the end of their batches.
	IF NOT EXISTS (
		SELECT 1 FROM unnest(p_times) AS t
		 WHERE t IS NOT NULL
		   AND to_regclass(format('adstream.%I', p_table || '_p' ||
				to_char(date_bin(v_grain, t, timestamptz '1970-01-01 00:00:00+00') AT TIME ZONE 'UTC',
						'YYYYMMDD"_"HH24MI'))) IS NULL) THEN
		RETURN 0;
	END IF;

	-- Serialise creators with the lock ATTACH takes anyway (inserts are not
	-- blocked).  Unlike an advisory lock, taking it also processes catalog
	-- invalidations, so the check below sees a partition that the previous
	-- holder created and committed.
	EXECUTE format('LOCK TABLE adstream.%I IN SHARE UPDATE EXCLUSIVE MODE', p_table);

	FOR v_lo IN
		SELECT DISTINCT date_bin(v_grain, t, timestamptz '1970-01-01 00:00:00+00')
		  FROM unnest(p_times) AS t WHERE t IS NOT NULL
	LOOP
		v_name := p_table || '_p' || to_char(v_lo AT TIME ZONE 'UTC', 'YYYYMMDD"_"HH24MI');
		CONTINUE WHEN to_regclass(format('adstream.%I', v_name)) IS NOT NULL;
		-- CREATE + ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent, so
		-- readers and other workers' inserts are not blocked.
		EXECUTE format('CREATE TABLE adstream.%I (LIKE adstream.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS) WITH (%s)',
					   v_name, p_table, array_to_string(ARRAY['fillfactor=' || v_fill] || v_options, ', '));
		EXECUTE format('ALTER TABLE adstream.%I ATTACH PARTITION adstream.%I FOR VALUES FROM (%L) TO (%L)',
					   p_table, v_name, v_lo, v_lo + v_grain);
		v_created := v_created + 1;
	END LOOP;
	RETURN v_created;
END
$$;

-------------------------------------------------------------------------------
-- Attribution gating: a partition that has messages to read but no
-- watermark yet (a worker that started on a backlog and has not committed
-- its first batch) holds the ad-events watermark back.  Before, it was
-- ignored, and orders could be judged before its clicks were read.
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION adstream.ad_events_watermark()
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN CASE
	WHEN EXISTS (
		SELECT 1 FROM adstream.sources s
		  JOIN adstream.partition_status() p ON p.source_id = s.id
		  LEFT JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic AND o.partition = p.partition
		 WHERE s.kind = 'ad_events' AND s.enabled AND o.max_event_ts IS NULL
		   AND (p.high_watermark IS NULL OR p.high_watermark > coalesce(o.next_offset, 0)))
	THEN '-infinity'::timestamptz
	ELSE (SELECT min(o.max_event_ts)
			FROM adstream.offsets o JOIN adstream.sources s ON s.name = o.source AND s.topic = o.topic
		   WHERE s.kind = 'ad_events' AND s.enabled AND o.max_event_ts IS NOT NULL)
END;
COMMENT ON FUNCTION adstream.ad_events_watermark() IS
	'Lowest event-time watermark over the partitions of all enabled ad-events sources; -infinity while a partition with messages to read has none yet';

-------------------------------------------------------------------------------
-- Rollups serialise on adstream's own lock too.
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION adstream.refresh_rollups()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_minutes	timestamptz[];
	v_level		text;
	v_below		text;
	v_width		interval;
BEGIN
	PERFORM adstream._lock('adstream.rollups', 0, true);
	WITH d AS (DELETE FROM adstream.rollup_pending RETURNING window_start)
	SELECT array_agg(window_start) INTO v_minutes FROM d;
	IF v_minutes IS NULL THEN
		RETURN 0;
	END IF;

	-- Each level from the one below it: hours from minutes, 6h from hours, days from 6h.
	FOR v_level, v_below, v_width IN
		VALUES ('hour', 'ad_stats_minute', interval '1 hour'),
			   ('6h', 'ad_stats_hour', interval '6 hours'),
			   ('day', 'ad_stats_6h', interval '1 day')
	LOOP
		EXECUTE format($q$
			INSERT INTO adstream.%1$I AS r (ad_id, campaign_id, window_start, impressions, clicks)
			SELECT s.ad_id, max(s.campaign_id), adstream.bucket(%3$L, s.window_start), sum(s.impressions), sum(s.clicks)
			  FROM adstream.%2$I s
			  JOIN (SELECT DISTINCT adstream.bucket(%3$L, t) AS b FROM unnest($1) t) b
				ON s.window_start >= b.b AND s.window_start < b.b + $2
			 GROUP BY s.ad_id, 3
			ON CONFLICT (ad_id, window_start) DO UPDATE
			   SET campaign_id = excluded.campaign_id, impressions = excluded.impressions, clicks = excluded.clicks$q$,
			'ad_stats_' || v_level, v_below, v_level)
		USING v_minutes, v_width;
	END LOOP;

	RETURN cardinality(v_minutes);
END
$$;
