--
-- alter_source, alter_sink, rename_source, rename_sink and what create_source
-- and create_sink return (issue #14).  No broker is reachable here: the
-- checks that need one (partition counts, cluster ids) find nothing, and say
-- so where it matters.
--
\set SHOW_CONTEXT never
SET client_min_messages = error;	-- not the "workers run elsewhere" warning

-------------------------------------------------------------------------------
-- create_source and create_sink return the new id
-------------------------------------------------------------------------------

SELECT adstream.create_source('alt', 'k1:9092,k2:9092', 'alt-topic') AS src_id \gset
SELECT id = :src_id AS create_source_returns_the_id FROM adstream.sources WHERE name = 'alt';
SELECT adstream.create_sink('alt_sink', 'k1:9092') AS sink_id \gset
SELECT id = :sink_id AS create_sink_returns_the_id FROM adstream.sinks WHERE name = 'alt_sink';
SELECT pg_typeof(adstream.create_source('alt2', 'k3:9092', 'alt-topic-2')) AS create_source_type;

-- Offsets and dead letters of alt, as a worker would have written them.
INSERT INTO adstream.offsets (source, topic, partition, next_offset, accepted)
VALUES ('alt', 'alt-topic', 0, 100, 90), ('alt', 'alt-topic', 1, 50, 50);
INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes)
VALUES ('alt', 'alt-topic', 0, 7, 'invalid_json', 'x', '\x7b', 1);
SELECT generation AS gen0 FROM adstream.sources WHERE name = 'alt' \gset

-------------------------------------------------------------------------------
-- alter_source: refused, nothing changes
-------------------------------------------------------------------------------

SELECT adstream.alter_source('nope', '{"workers": 2}');
SELECT adstream.alter_source('alt', NULL);
SELECT adstream.alter_source('alt', '[1]');
SELECT adstream.alter_source('alt', '{"topic": "other"}');
SELECT adstream.alter_source('alt', '{"kind": "orders"}');
SELECT adstream.alter_source('alt', '{"name": "other"}');
SELECT adstream.alter_source('alt', '{"workers": 0}');
SELECT adstream.alter_source('alt', '{"workers": 17}');		-- adstream.max_workers is 16
SELECT adstream.alter_source('alt', '{"start": "middle"}');
SELECT adstream.alter_source('alt', '{"group.id": "g"}');
SELECT adstream.alter_source('alt', '{"no.such.property": 1}');
SELECT adstream.alter_source('alt', '{"fetch.wait.max.ms": "soon"}');
SELECT adstream.alter_source('alt', '{"brokers": ""}');
-- what only building the client refuses, with a hint naming the property
SELECT adstream.alter_source('alt', '{"security.protocol": "SASL_SSL"}');
SELECT adstream.alter_source('alt', '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"}');
-- a secret value never shows in the message
SELECT adstream.alter_source('alt', '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.password": "hunter2"}');
-- another cluster: no address in common, and no broker answers for its id
SELECT adstream.alter_source('alt', '{"brokers": "k9:9092"}');
-- the same topic of the same cluster is another source's
SELECT adstream.create_source('alt3', 'k7:9092', 'alt-topic-2') IS NOT NULL AS created;
SELECT adstream.alter_source('alt2', '{"brokers": "k3:9092,K7:9092"}');
SELECT generation = :gen0 AS unchanged, workers, brokers, kafka_options
  FROM adstream.sources WHERE name = 'alt';

-------------------------------------------------------------------------------
-- alter_source: accepted
-------------------------------------------------------------------------------

-- nothing different: false, no new generation
SELECT adstream.alter_source('alt', '{"workers": 1, "start": "earliest"}');
SELECT generation = :gen0 AS same_generation FROM adstream.sources WHERE name = 'alt';
-- a broker of the current list kept: the same cluster
SELECT adstream.alter_source('alt', '{"brokers": "k2:9092,k5:9092", "workers": 3, "fetch.wait.max.ms": 50,
									 "sasl.username": "u", "sasl.password": "pw-1"}');
SELECT generation > :gen0 AS new_generation FROM adstream.sources WHERE name = 'alt';
SELECT brokers, workers, start_policy, kafka_options FROM adstream.source_config WHERE name = 'alt';
-- null takes an option back to its default
SELECT adstream.alter_source('alt', '{"workers": null, "fetch.wait.max.ms": null, "start": "latest"}');
SELECT workers, start_policy, group_id, kafka_options FROM adstream.source_config WHERE name = 'alt';
-- offsets and dead letters are untouched
SELECT partition, next_offset, accepted FROM adstream.offsets WHERE source = 'alt' ORDER BY 1;

-------------------------------------------------------------------------------
-- rename_source
-------------------------------------------------------------------------------

SELECT adstream.rename_source('alt', 'alt2');		-- taken
SELECT adstream.rename_source('alt', '-bad');
SELECT adstream.rename_source('nope', 'x');
SELECT generation AS gen1 FROM adstream.sources WHERE name = 'alt' \gset
SELECT adstream.rename_source('alt', 'alt_eu');
SELECT id = :src_id AS same_id, generation > :gen1 AS new_generation, group_id
  FROM adstream.sources WHERE name = 'alt_eu';
SELECT source, partition, next_offset FROM adstream.offsets WHERE source IN ('alt', 'alt_eu') ORDER BY 1, 2;
SELECT source, "offset" FROM adstream.rejected_events WHERE source IN ('alt', 'alt_eu');

-------------------------------------------------------------------------------
-- sinks
-------------------------------------------------------------------------------

SELECT adstream.alter_sink('alt_sink', '{"topic_ad_stats": "other"}');
SELECT adstream.alter_sink('alt_sink', '{"transactional.id": "x"}');
SELECT adstream.alter_sink('alt_sink', '{"message.timeout.ms": 60000}');
SELECT adstream.alter_sink('alt_sink', '{"brokers": "k9:9092"}');
SELECT adstream.alter_sink('alt_sink', '{}');
SELECT adstream.alter_sink('alt_sink', '{"message.timeout.ms": 5000, "brokers": "k1:9092,k4:9092"}');
SELECT brokers, kafka_options, last_id FROM adstream.sinks WHERE name = 'alt_sink';
SELECT adstream.rename_sink('alt_sink', 'alt_sink_eu');
SELECT adstream.rename_sink('alt_sink_eu', 'bad name');
SELECT name, brokers FROM adstream.sinks ORDER BY 1;

-------------------------------------------------------------------------------
-- who may: adstream_admin, and a property only a superuser may set stays
-------------------------------------------------------------------------------

SELECT adstream.alter_source('alt_eu', '{"ssl.ca.location": "/nonexistent/ca.pem"}');	-- unused without SSL
CREATE ROLE alter_admin LOGIN IN ROLE adstream_admin;
CREATE ROLE alter_reader LOGIN IN ROLE adstream_reader;
SET SESSION AUTHORIZATION alter_reader;
SELECT adstream.alter_source('alt_eu', '{"workers": 2}');
SELECT adstream.rename_sink('alt_sink_eu', 'x');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION alter_admin;
SELECT adstream.alter_source('alt_eu', '{"workers": 2}');	-- keeps ssl.ca.location
SELECT adstream.alter_source('alt_eu', '{"ssl.ca.location": "/tmp/other.pem"}');
SELECT adstream.rename_source('alt_eu', 'alt_admin');
RESET SESSION AUTHORIZATION;
SELECT name, workers, kafka_options->>'ssl.ca.location' AS ca FROM adstream.sources WHERE id = :src_id;
DROP ROLE alter_admin, alter_reader;

SELECT adstream.drop_source(name) FROM adstream.sources WHERE name IN ('alt_admin', 'alt2', 'alt3') ORDER BY name;
SELECT adstream.drop_sink('alt_sink_eu');
RESET client_min_messages;
