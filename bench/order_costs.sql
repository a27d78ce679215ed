-- bench/order_costs.sh's steps: what storing and judging an order costs the
-- orders worker's backend, piece by piece.  Loaded once into a scratch
-- database without workers; each step is CALL bench_step(name) in a backend
-- of its own, committing after every batch or pass as the worker does, and
-- returns that backend's CPU time (/proc, 10 ms ticks) and wall time, how
-- many orders it handled, and how many of them found a click.

-- The backend's own CPU seconds (user + system).
CREATE FUNCTION cpu_s() RETURNS float8 LANGUAGE sql AS $$
	SELECT (split_part(s, ' ', 12)::float8 + split_part(s, ' ', 13)::float8) / 100
	  FROM (SELECT split_part(pg_read_file('/proc/self/stat'), ') ', 2) AS s) x
$$;

-- The ad-events watermark, which the steps set behind or past every order:
-- the max_event_ts of the clicks source's one offsets row.
CREATE FUNCTION set_watermark(p_ts timestamptz) RETURNS void LANGUAGE sql AS $$
	UPDATE adstream.offsets SET max_event_ts = p_ts WHERE source = 'oc_clicks'
$$;

-- The orders, in batches as the orders worker passes them to _store_orders.
CREATE TABLE order_batches (b integer PRIMARY KEY, ids uuid[], users bigint[], stores bigint[],
	amounts text[], currencies text[], ts timestamptz[], parts integer[]);

CREATE PROCEDURE bench_step(p_step text, OUT cpu_s float8, OUT wall_s float8, OUT orders bigint,
	OUT credited bigint)
LANGUAGE plpgsql AS $$
DECLARE
	r		record;
	c0		float8 := cpu_s();
	t0		timestamptz := clock_timestamp();
	n		bigint := 0;
	m		bigint;
	k		integer;
BEGIN
	IF p_step IN ('row_alone', 'stored_waiting', 'judged_at_once', 'judged_at_once_sink') THEN
		FOR r IN SELECT * FROM order_batches ORDER BY b LOOP
			IF p_step = 'row_alone' THEN
				-- the order as a row and nothing else: a plain insert, judged
				-- (no entry in orders_waiting_idx), no conflict check, no lookup
				INSERT INTO adstream.orders (order_id, source, user_id, store_id, amount, currency, ts,
											 partition, status)
				SELECT u.*, 'unattributed'
				  FROM unnest(r.ids, ARRAY(SELECT 'oc_shop' FROM unnest(r.ids)), r.users, r.stores,
							  r.amounts::numeric[], r.currencies, r.ts, r.parts) u;
				GET DIAGNOSTICS k = ROW_COUNT;
				n := n + k;
			ELSE
				SELECT n + count(*) INTO n
				  FROM adstream._store_orders('oc_shop', r.ids, r.users, r.stores, r.amounts, r.currencies,
											  r.ts, r.parts);
			END IF;
			COMMIT;
		END LOOP;
	ELSIF p_step = 'pass' THEN
		-- the worker's pass size (ADS_ATTRIBUTION_PASS)
		LOOP
			k := adstream.attribute_orders(5000);
			EXIT WHEN k = 0;
			n := n + k;
			COMMIT;
		END LOOP;
	ELSIF p_step = 'lookup' THEN
		SELECT count(*), count(t.event_id) INTO n, m
		  FROM order_batches b, unnest(b.users, b.stores, b.ts) u(user_id, store_id, ts)
		 CROSS JOIN LATERAL adstream._last_touch(u.user_id, u.store_id, u.ts,
												 current_setting('adstream.attribution_window')::interval,
												 interval '0') t;
	ELSIF p_step = 'lookup_one_partition' THEN
		-- the same lookups in the one partition that holds the clicks
		EXECUTE format(
			'SELECT count(*), count(c.event_id) FROM order_batches b, unnest(b.users, b.stores, b.ts) u(user_id, store_id, ts)
			  LEFT JOIN LATERAL (SELECT e.event_id FROM %s e
								  WHERE e.user_id = u.user_id AND e.store_id = u.store_id AND e.type = ''click''
									AND e.ts <= u.ts AND e.ts > u.ts - %L::interval
								  ORDER BY e.ts DESC, e.event_id DESC LIMIT 1) c ON true',
			(SELECT i.inhrelid::regclass FROM pg_inherits i
			  WHERE i.inhparent = 'adstream.ad_events'::regclass
			  ORDER BY pg_relation_size(i.inhrelid) DESC LIMIT 1),
			current_setting('adstream.attribution_window'))
		INTO n, m;
	ELSE
		RAISE EXCEPTION 'no step %', p_step;
	END IF;
	cpu_s := cpu_s() - c0;
	wall_s := extract(epoch FROM clock_timestamp() - t0);
	orders := n;
	credited := coalesce(m, (SELECT count(*) FROM adstream.attributed_orders));
END
$$;
