-- Tables of the usual alternative (bench/alt_consumer.c): what a user would
-- create to count ad events exactly once without adstream.
CREATE SCHEMA alt;

-- every event id ever counted: the dedup state
CREATE TABLE alt.seen_events (
	event_id	uuid PRIMARY KEY
);

CREATE TABLE alt.ad_stats_minute (
	ad_id			bigint NOT NULL,
	window_start	timestamptz NOT NULL,
	campaign_id		bigint NOT NULL,
	impressions		bigint NOT NULL,
	clicks			bigint NOT NULL,
	PRIMARY KEY (ad_id, window_start)
);

CREATE TABLE alt.rejected_events (
	topic		text NOT NULL,
	partition	integer NOT NULL,
	"offset"	bigint NOT NULL,
	reason		text NOT NULL,
	payload		bytea,
	PRIMARY KEY (topic, partition, "offset")
);

-- next offset to read per partition, stored in each batch's transaction
CREATE TABLE alt.offsets (
	topic			text NOT NULL,
	partition		integer NOT NULL,
	next_offset		bigint NOT NULL,
	watermark_us	bigint,
	accepted		bigint NOT NULL,
	duplicates		bigint NOT NULL,
	rejected		bigint NOT NULL,
	PRIMARY KEY (topic, partition)
);
