--
-- publish_record: the ad_stats value written in C (_ad_stats_record) against
-- the jsonb_build_object it stands for, at the ends of PostgreSQL's time
-- range, around the Unix and PostgreSQL epochs to the microsecond, and over
-- many node names and values (complements the cases in "publish").
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE FUNCTION pg_temp.sql_value(p_node text, p_ad bigint, p_w timestamptz, p_camp bigint, p_imp bigint,
								  p_clk bigint, p_v bigint, p_u timestamptz) RETURNS text
LANGUAGE sql AS $$
SELECT jsonb_build_object('node', p_node, 'ad_id', p_ad, 'campaign_id', p_camp,
		'window_start', (extract(epoch FROM p_w) * 1000)::bigint, 'impressions', p_imp, 'clicks', p_clk,
		'version', p_v,
		'record_uuid', adstream.record_uuid('ad_stats', adstream._record_key('ad_stats', p_ad, p_w, NULL)),
		'updated_at', (extract(epoch FROM p_u) * 1000)::bigint)::text
$$;
CREATE FUNCTION pg_temp.c_value(p_node text, p_ad bigint, p_w timestamptz, p_camp bigint, p_imp bigint,
								p_clk bigint, p_v bigint, p_u timestamptz) RETURNS text
LANGUAGE sql AS $$
SELECT adstream._ad_stats_record(adstream._record_key('ad_stats', p_ad, p_w, NULL), p_node, p_ad, p_w,
								 p_camp, p_imp, p_clk, p_v, p_u)
$$;

-- The ends of the time range, and instants near both epochs.
SELECT t AS instant,
	   pg_temp.c_value('n', 1, t, 1, 1, 1, 1, t) = pg_temp.sql_value('n', 1, t, 1, 1, 1, 1, t) AS same
  FROM unnest(ARRAY['294276-12-31 23:59:59.999999+00', '294247-01-10 04:00:54.775807+00',
					'294247-01-10 04:00:54.775808+00', '294247-01-10 04:00:54.7755+00',
					'200000-06-01 12:00:00.0005+00',
					'4714-11-24 00:00:00+00 BC', '4714-11-24 00:00:00.0005+00 BC',
					'2000-01-01 00:00:00+00', '1999-12-31 23:59:59.9995+00', '2000-01-01 00:00:00.0005+00',
					'1999-12-31 23:59:59.9994+00', '2000-01-01 00:00:00.0004+00',
					'1970-01-01 00:00:00.0005+00', '1969-12-31 23:59:59.9995+00',
					'1970-01-01 00:00:00.000499+00', '1969-12-31 23:59:59.999501+00']::timestamptz[]) t
 ORDER BY t;

-- Many values: node names of every kind of character (control, quote,
-- backslash, multibyte), signs and sizes, microseconds anywhere from 1900
-- to 2100; none may differ.
SELECT count(*) AS cases,
	   count(*) FILTER (WHERE pg_temp.c_value(node, ad, w, camp, imp, clk, v, u)
							  IS DISTINCT FROM pg_temp.sql_value(node, ad, w, camp, imp, clk, v, u)) AS differ
  FROM (SELECT string_agg(chr(CASE (g * 7 + k) % 6 WHEN 0 THEN 1 + (g * k) % 31 WHEN 1 THEN 34 WHEN 2 THEN 92
										 WHEN 3 THEN 233 + k WHEN 4 THEN 8364 ELSE 65 + (g + k) % 58 END), '')
			   AS node,
			   (g * 2654435761) % 9223372036854775 * CASE WHEN g % 2 = 0 THEN -1 ELSE 1 END AS ad,
			   '1900-01-01 00:00+00'::timestamptz + ((g * 48271) % 6311520) * interval '1 minute' AS w,
			   CASE WHEN g % 5 = 0 THEN NULL ELSE g * 31 END AS camp,
			   (g::bigint * g * g) AS imp, g % 7 AS clk, g::bigint * 1000003 AS v,
			   '1900-01-01 00:00+00'::timestamptz + ((g::bigint * 2147483647) % 6311520000000000) * interval '1 microsecond' AS u
		  FROM generate_series(1, 3000) g, generate_series(0, g % 9) k
		 GROUP BY g) x;
