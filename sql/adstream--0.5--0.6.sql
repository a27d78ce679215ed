/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */

-------------------------------------------------------------------------------
-- Dedup expiry sees every partition (issue #11: a partition with neither a
-- stored offset nor a running worker was invisible to expiry)
-------------------------------------------------------------------------------

ALTER TABLE adstream.sources ADD COLUMN partitions integer CHECK (partitions > 0);

CREATE OR REPLACE FUNCTION adstream.expire_dedup_state()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET timezone = 'UTC'		-- the horizon is subtracted as a duration (see "Time is UTC")
SET lock_timeout = '2s'		-- never stall ingestion behind a long reader; retried next round
AS $$
DECLARE
	v_horizon	interval := current_setting('adstream.dedup_horizon')::interval;
	v_latest	timestamptz;
	v_rel		regclass;
	v_upper		timestamptz;
	v_live		boolean;
	v_dropped	integer := 0;
BEGIN
	-- Workers hold this lock shared while they judge and write a batch.
	PERFORM adstream._lock('adstream.dedup_expiry', 0, true);

	-- Read to its end means committed to its end: what a worker has read
	-- into memory but not written is judged after this, against what it gives up.
	WITH pos AS (
		SELECT p.source_id, p.partition, p.high_watermark
		  FROM adstream.partition_status() p),
	parts AS (
		SELECT s.id, o.partition, o.max_event_ts, coalesce(o.next_offset >= pos.high_watermark, false) AS caught_up
		  FROM adstream.sources s
		  JOIN adstream.offsets o ON o.source = s.name AND o.topic = s.topic
		  LEFT JOIN pos ON pos.source_id = s.id AND pos.partition = o.partition
		 WHERE s.kind = 'ad_events'
		UNION ALL
		SELECT s.id, pos.partition, NULL, coalesce(pos.high_watermark = 0, false)
		  FROM adstream.sources s JOIN pos ON pos.source_id = s.id
		 WHERE s.kind = 'ad_events'
		   AND NOT EXISTS (SELECT 1 FROM adstream.offsets o
							WHERE o.source = s.name AND o.topic = s.topic AND o.partition = pos.partition)),
	-- A partition seen neither way (its worker not started yet) holds the
	-- whole source: nothing of it is known.
	wm AS (
		SELECT p.id,
			   CASE WHEN count(DISTINCT p.partition) FILTER (WHERE p.partition < s.partitions) < s.partitions
					THEN '-infinity'
					ELSE coalesce(min(CASE WHEN NOT p.caught_up THEN coalesce(p.max_event_ts, '-infinity') END),
								  max(p.max_event_ts)) END AS wm
		  FROM parts p JOIN adstream.sources s ON s.id = p.id
		 GROUP BY p.id, s.partitions)
	UPDATE adstream.sources s
	   SET dedup_expired_before = greatest(s.dedup_expired_before,
			   date_bin('1 hour', wm.wm - v_horizon, timestamptz '1970-01-01 00:00:00+00'))
	  FROM wm
	 WHERE wm.id = s.id AND isfinite(wm.wm);

	SELECT max(dedup_expired_before) INTO v_latest FROM adstream.sources WHERE kind = 'ad_events';
	FOR v_rel, v_upper IN
		SELECT i.inhrelid::regclass, adstream._partition_upper(i.inhrelid)
		  FROM pg_inherits i WHERE i.inhparent = 'adstream.dedup_log'::regclass
	LOOP
		CONTINUE WHEN v_latest IS NULL OR v_upper > v_latest;
		-- Rows of an hour are live while their source still remembers it.
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s d JOIN adstream.sources s ON s.id = d.source_id '
					   'WHERE s.dedup_expired_before < %L)', v_rel, v_upper) INTO v_live;
		IF v_live THEN
			EXECUTE format('DELETE FROM %s d WHERE NOT EXISTS (SELECT 1 FROM adstream.sources s '
						   'WHERE s.id = d.source_id AND s.dedup_expired_before < %L)', v_rel, v_upper);
		ELSE
			EXECUTE format('ALTER TABLE adstream.dedup_log DETACH PARTITION %s', v_rel);
			EXECUTE format('DROP TABLE %s', v_rel);
			v_dropped := v_dropped + 1;
		END IF;
	END LOOP;

	-- Last, once the rows are gone: the index forgets the same hours.
	PERFORM adstream._dedup_forget(coalesce(array_agg(id), '{}'), coalesce(array_agg(dedup_expired_before), '{}'))
	   FROM adstream.sources WHERE kind = 'ad_events';
	RETURN v_dropped;
END
$$;

-------------------------------------------------------------------------------
-- Dedup state sized for real volumes (issue #12, item 3): a hot tier of whole
-- ids and a filter of 32-bit slots; dedup_log rows name their segment, where
-- a filter's "maybe" is looked up
-------------------------------------------------------------------------------

ALTER TABLE adstream.dedup_log ADD COLUMN seg integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN adstream.dedup_log.seg IS
	'Segment of the source''s hour these ids belong to: where the dedup index looks them up when its filter says maybe';

DROP FUNCTION adstream.dedup_index_status();
CREATE FUNCTION adstream.dedup_index_status(
	OUT capacity bigint, OUT entries bigint, OUT shared_memory_bytes bigint, OUT ready boolean,
	OUT hot_entries bigint, OUT filter_entries bigint, OUT segments integer, OUT moved_to_filter bigint,
	OUT disk_lookups bigint, OUT disk_duplicates bigint, OUT disk_lookup_ms bigint, OUT rebuild_ms bigint)
RETURNS record LANGUAGE C STRICT VOLATILE
AS 'MODULE_PATHNAME', 'adstream_dedup_index_status';
COMMENT ON FUNCTION adstream.dedup_index_status() IS
	'Capacity (adstream.dedup_index_size) and use of the shared-memory dedup index (its hot tier and its filter); ids looked up in dedup_log since the start, found there, and the time it took; ready once rebuilt after a start';
REVOKE ALL ON FUNCTION adstream.dedup_index_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION adstream.dedup_index_status() TO adstream_reader;
