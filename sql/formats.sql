--
-- formats: the input-format options of create_source (docs/formats.md),
-- checked with the workers' own compiler before anything is stored, and the
-- re-drive API.  Errors are shown with their DETAIL and HINT lines.
--
\set SHOW_CONTEXT never
SET client_min_messages = error;	-- not the warning that the workers run in database postgres
SET search_path = public;

-- What is stored: only what differs from the defaults.
SELECT adstream._input_format('ad_events', '{}');
SELECT adstream._input_format('ad_events', '{"workers": 2, "security.protocol": "SSL"}');
SELECT adstream._input_format('ad_events',
	'{"fields": {"event_id": "eventId", "ad_id": "payload.ad.id", "type": "type"}, "ts_format": "epoch_s"}');
SELECT adstream._input_format('ad_events', '{"ts_format": "epoch_ms"}');
SELECT adstream._input_format('ad_events',
	'{"format": "avro", "schema_registry": "http://registry:8081/", "schema_registry_timeout_ms": 2000}');
SELECT adstream._input_format('orders', '{"fields": {"amount": "total.value", "currency": "total.ccy"}, "ts_format": "rfc3339"}');

-- Refused, each with what to do.
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "a.b", "campaign_id": "a.b.c"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "x", "campaign_id": "x"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "type"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"order_id": "id"}}');
SELECT adstream.create_source('f', 'k:9092', 't', 'orders', options => '{"fields": {"type": "kind"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "a..b"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "a.b.c.d.e.f.g.h.i"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": "caf\u00e9"}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": {"ad_id": 5}}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"fields": ["ad_id"]}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"ts_format": "epoch_ns"}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"ts_format": 1000}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"format": "xml"}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"format": "avro"}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"format": "avro", "schema_registry": "ftp://r"}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"format": "avro", "schema_registry": "http://r/?x=1"}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"format": "avro", "schema_registry": "http://r", "schema_registry_timeout_ms": 10}');
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"schema_registry": "http://r"}');
SELECT adstream.create_source('f', 'k:9092', 't', 'orders', options => '{"format": "avro", "schema_registry": "http://r"}');
SELECT count(*) AS sources_after_refusals FROM adstream.sources;

-- Accepted and stored with the source; the other options are unchanged.
SELECT adstream.create_source('f', 'k:9092', 't', options => '{"workers": 2, "fields": {"ad_id": "payload.ad.id"}, "ts_format": "epoch_us", "client.id": "x"}');
SELECT name, workers, input_format, kafka_options FROM adstream.sources WHERE name = 'f';

-- Re-drive: the source must exist; a source without dead letters marks nothing.
SELECT * FROM adstream.redrive_dead_letters('nope');
SELECT * FROM adstream.redrive_dead_letters('f');
-- Only whole payloads are marked, with the source's generation.
INSERT INTO adstream.rejected_events (source, topic, partition, "offset", reason, detail, payload, payload_bytes)
VALUES ('f', 't', 0, 1, 'missing_field', 'x', '\x7b7d', 2),
	   ('f', 't', 0, 2, 'missing_field', 'x', '\x7b', 9000),
	   ('f', 't', 1, 3, 'invalid_json', 'x', '\x7b', 1),
	   ('f', 'other', 0, 4, 'missing_field', 'x', '\x7b7d', 2);
SELECT * FROM adstream.redrive_dead_letters('f', ARRAY['missing_field']);
SELECT partition, "offset", redrive_generation = (SELECT generation FROM adstream.sources WHERE name = 'f') AS marked
  FROM adstream.rejected_events WHERE source = 'f' ORDER BY 1, 2;
SELECT * FROM adstream.redrive_dead_letters('f');
DELETE FROM adstream.rejected_events WHERE source = 'f';
SELECT adstream.drop_source('f');

-- validate_event under a definition: try a mapping before creating the source.
SELECT reason, detail, event_id, type, ad_id, campaign_id, user_id, store_id, ts AT TIME ZONE 'UTC' AS ts_utc
  FROM adstream.validate_event('{"eventId": "0f8fad5b-d9cb-469f-a165-70867728950e", "kind": "click",
	"payload": {"ad": {"id": 42, "campaign": 7}}, "user": {"id": 1001}, "storeId": 3, "time": 1700000000}',
	'{"fields": {"event_id": "eventId", "type": "kind", "ad_id": "payload.ad.id", "campaign_id": "payload.ad.campaign",
	  "user_id": "user.id", "store_id": "storeId", "ts": "time"}, "ts_format": "epoch_s"}');
SELECT reason, detail FROM adstream.validate_event('{"eventId": "0f8fad5b-d9cb-469f-a165-70867728950e", "kind": "click",
	"payload": {"ad": {"campaign": 7}}, "user": {"id": 1001}, "storeId": 3, "time": 1700000000}',
	'{"fields": {"event_id": "eventId", "type": "kind", "ad_id": "payload.ad.id", "campaign_id": "payload.ad.campaign",
	  "user_id": "user.id", "store_id": "storeId", "ts": "time"}}');
SELECT reason, detail FROM adstream.validate_event('{"event_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "type": "click",
	"ad_id": 1, "campaign_id": 2, "user_id": 3, "store_id": 4, "ts": 1700000000000}', '{"ts_format": "rfc3339"}');
-- the same as without options when they are empty
SELECT (adstream.validate_event('{"event_id": 1}', '{}')).reason = (adstream.validate_event('{"event_id": 1}')).reason AS same;
SELECT * FROM adstream.validate_event('{}', '{"fields": {"ad_id": "a.b", "campaign_id": "a.b.c"}}');
SELECT * FROM adstream.validate_event('{}', '{"format": "avro", "schema_registry": "http://r"}');

-- source_config shows the input format, credentials in the registry URL masked.
SELECT adstream.create_source('fa', 'k:9092', 'ta', options => '{"format": "avro", "schema_registry": "https://key:secret@registry:8081/x"}');
SELECT name, input_format FROM adstream.source_config WHERE name = 'fa';
SELECT adstream.drop_source('fa');
