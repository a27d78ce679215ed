--
-- validation: adstream.validate_event() runs the consumer's parser on one
-- message value.  Every reason code, the order in which checks apply (the
-- first failing check decides), and the values of valid events.
--
-- adstream.max_message_bytes is at its default (1 MB = 1048576 bytes).
-- Text-form payloads below are pure ASCII so that the result does not depend
-- on the database encoding; other bytes are given as bytea.
--
SET search_path = public;
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

SHOW adstream.max_message_bytes;

-- ev(): a valid event, with any field's raw JSON replaced (NULL omits the
-- field) and optional extra members appended.
CREATE FUNCTION pg_temp.ev(
	event_id text DEFAULT '"f47ac10b-58cc-4372-a567-0e02b2c3d479"',
	type text DEFAULT '"impression"',
	ad_id text DEFAULT '1',
	campaign_id text DEFAULT '2',
	user_id text DEFAULT '3',
	store_id text DEFAULT '4',
	ts text DEFAULT '1709287200000',	-- 2024-03-01 10:00:00 UTC
	extra text DEFAULT NULL)
RETURNS text LANGUAGE sql IMMUTABLE
RETURN '{' || concat_ws(',',
		'"event_id":' || event_id, '"type":' || type, '"ad_id":' || ad_id,
		'"campaign_id":' || campaign_id, '"user_id":' || user_id,
		'"store_id":' || store_id, '"ts":' || ts, extra) || '}';

SELECT pg_temp.ev() AS base_event;

CREATE TEMP TABLE cases (
	id		serial PRIMARY KEY,
	section	text NOT NULL,
	label	text NOT NULL,
	payload	bytea NOT NULL
);
CREATE PROCEDURE pg_temp.add(p_section text, p_label text, p_payload text)
LANGUAGE sql
AS $$ INSERT INTO cases (section, label, payload)
	  VALUES (p_section, p_label, convert_to(p_payload, 'UTF8')) $$;

-------------------------------------------------------------------------------
-- Valid events
-------------------------------------------------------------------------------

-- The base event, through both signatures.
SELECT * FROM adstream.validate_event(pg_temp.ev());
SELECT * FROM adstream.validate_event(convert_to(pg_temp.ev(), 'UTF8'));

-- NULL in, NULL out (the functions are STRICT).
SELECT adstream.validate_event(NULL::text) IS NULL AS text_null,
	   adstream.validate_event(NULL::bytea) IS NULL AS bytea_null;

INSERT INTO cases (section, label, payload) VALUES
	('ok', 'epoch ms, click',
		convert_to(pg_temp.ev(type => '"click"', ts => '1709287200123'), 'UTF8')),
	('ok', 'epoch ms 0 is the lowest time',
		convert_to(pg_temp.ev(ts => '0'), 'UTF8')),
	('ok', 'epoch ms at the highest time',
		convert_to(pg_temp.ev(ts => '253402300799999'), 'UTF8')),
	('ok', 'RFC 3339 Z',
		convert_to(pg_temp.ev(ts => '"2024-03-01T10:00:00Z"'), 'UTF8')),
	('ok', 'RFC 3339 lower-case t and z',
		convert_to(pg_temp.ev(ts => '"2024-03-01t10:00:00z"'), 'UTF8')),
	('ok', 'RFC 3339 space separator',
		convert_to(pg_temp.ev(ts => '"2024-03-01 10:00:00Z"'), 'UTF8')),
	('ok', 'RFC 3339 +05:30 with microseconds',
		convert_to(pg_temp.ev(ts => '"2024-03-01T15:30:00.123456+05:30"'), 'UTF8')),
	('ok', 'RFC 3339 -08:00 crossing midnight',
		convert_to(pg_temp.ev(ts => '"2024-02-29T23:59:59.5-08:00"'), 'UTF8')),
	('ok', 'RFC 3339 nanoseconds truncated',
		convert_to(pg_temp.ev(ts => '"2024-03-01T10:00:00.999999999Z"'), 'UTF8')),
	('ok', 'RFC 3339 leap day',
		convert_to(pg_temp.ev(ts => '"2000-02-29T00:00:00Z"'), 'UTF8')),
	('ok', 'RFC 3339 last accepted instant',
		convert_to(pg_temp.ev(ts => '"9999-12-31T23:59:59.999999Z"'), 'UTF8')),
	('ok', 'ids at 0 and int64 max',
		convert_to(pg_temp.ev(ad_id => '0', campaign_id => '9223372036854775807',
							  user_id => '-0', store_id => '0'), 'UTF8')),
	('ok', 'upper-case UUID',
		convert_to(pg_temp.ev(event_id => '"F47AC10B-58CC-4372-A567-0E02B2C3D479"'), 'UTF8')),
	('ok', 'escaped keys and values',
		convert_to('{"\u0065vent_id":"f47ac10b-58cc-4372-a567-0e02b2c3d47\u0039","type":"cl\u0069ck",'
				   '"ad_id":1,"campaign_id":2,"user_id":3,"store_id":4,"ts":"2024-03-01T10:00:00\u005a"}', 'UTF8')),
	('ok', 'extra fields of any type are ignored',
		convert_to(pg_temp.ev(extra => '"extra":{"nested":[1,2,{"ad_id":"x"}]},"note":null,"score":1.5e3,"flag":true,"extra":"again"'), 'UTF8')),
	('ok', 'members in another order, with whitespace',
		convert_to(E' \t\r\n{ "ts" : 1709287200000 , "store_id" : 4, "user_id" : 3, "campaign_id" : 2,\n'
				   '"ad_id" : 1, "type" : "impression", "event_id" : "f47ac10b-58cc-4372-a567-0e02b2c3d479" }\n', 'UTF8')),
	('ok', 'multi-byte UTF-8 in an extra field',
		'\x7b226e6f7465223a22c3a9e282acf09f9880222c'::bytea	-- {"note":"e-acute euro emoji",
		|| convert_to(substr(pg_temp.ev(), 2), 'UTF8')),
	('ok', 'exactly max_message_bytes',
		convert_to(pg_temp.ev() || repeat(' ', 1048576 - length(pg_temp.ev())), 'UTF8'));

SELECT label, reason, detail, event_id, type, ad_id, campaign_id, user_id, store_id, ts
  FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'ok' ORDER BY id;

-------------------------------------------------------------------------------
-- One case per reason code (and variants)
-------------------------------------------------------------------------------

-- empty
SELECT * FROM adstream.validate_event('');
SELECT * FROM adstream.validate_event(''::bytea);

-- oversized: one byte over the limit, whatever the content
SELECT reason, detail, event_id FROM adstream.validate_event(
	pg_temp.ev() || repeat(' ', 1048577 - length(pg_temp.ev())));
SELECT reason, detail FROM adstream.validate_event(repeat('x', 2 * 1048576 + 3));

-- nul_byte (only possible in bytea)
SELECT reason, detail FROM adstream.validate_event('\x7b00227d'::bytea);
SELECT reason, detail FROM adstream.validate_event(
	convert_to(pg_temp.ev(), 'UTF8') || '\x00'::bytea);
SELECT reason, detail FROM adstream.validate_event(
	convert_to('{"note":"a', 'UTF8') || '\x00'::bytea || convert_to('b",' || substr(pg_temp.ev(), 2), 'UTF8'));

-- invalid_utf8
INSERT INTO cases (section, label, payload) VALUES
	('utf8', 'lone 0xff', '\xff'),
	('utf8', 'continuation byte', '\x7b2261223a2280227d'),					-- {"a":"\x80"}
	('utf8', 'overlong slash C0 AF', '\x7b2261223a22c0af227d'),
	('utf8', 'overlong 3-byte E0 80 AF', '\x7b2261223a22e080af227d'),
	('utf8', 'surrogate ED A0 80', '\x7b2261223a22eda080227d'),
	('utf8', 'above U+10FFFF F4 90 80 80', '\x7b2261223a22f4908080227d'),
	('utf8', 'truncated sequence at end', '\x7b2261223a22e282'),
	('utf8', 'in a contract field of a valid event',
		convert_to('{"event_id":"f47ac10b-58cc-4372-a567-0e02b2c3d479","type":"impression', 'UTF8')
		|| '\xfe'::bytea || convert_to('",' || substr(pg_temp.ev(event_id => NULL, type => NULL), 2), 'UTF8'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'utf8' ORDER BY id;

-- invalid_json
CALL pg_temp.add('json', 'unterminated object', '{');
CALL pg_temp.add('json', 'truncated event', left(pg_temp.ev(), -1));
CALL pg_temp.add('json', 'trailing garbage', pg_temp.ev() || ' x');
CALL pg_temp.add('json', 'two objects', '{}{}');
CALL pg_temp.add('json', 'single quotes', '{''ad_id'':1}');
CALL pg_temp.add('json', 'bare word', 'impression');
CALL pg_temp.add('json', 'trailing comma', '{"a":1,}');
CALL pg_temp.add('json', 'missing colon', '{"a" 1}');
CALL pg_temp.add('json', 'unquoted key', '{a:1}');
CALL pg_temp.add('json', 'leading zero', pg_temp.ev(ad_id => '01'));
CALL pg_temp.add('json', 'plus sign', pg_temp.ev(ad_id => '+1'));
CALL pg_temp.add('json', 'bad escape', '{"a":"\x"}');
CALL pg_temp.add('json', 'short unicode escape', '{"a":"\u12"}');
CALL pg_temp.add('json', 'raw tab in string', E'{"a":"\t"}');
CALL pg_temp.add('json', 'NaN', pg_temp.ev(ad_id => 'NaN'));
CALL pg_temp.add('json', 'only whitespace', '   ');
CALL pg_temp.add('json', 'nesting 65 deep', '{"x":' || repeat('[', 64) || repeat(']', 64) || '}');
CALL pg_temp.add('json', 'nesting 64 deep is fine (missing_field)',
		'{"x":' || repeat('[', 63) || repeat(']', 63) || '}');
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'json' ORDER BY id;

-- not_object
CALL pg_temp.add('notobj', 'array', '[' || pg_temp.ev() || ']');
CALL pg_temp.add('notobj', 'number', '42');
CALL pg_temp.add('notobj', 'string', '"{}"');
CALL pg_temp.add('notobj', 'null', 'null');
CALL pg_temp.add('notobj', 'true with whitespace', E' true\n');
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'notobj' ORDER BY id;

-- duplicate_key (only contract fields count; extra keys may repeat)
CALL pg_temp.add('dup', 'ad_id twice, same value', pg_temp.ev(extra => '"ad_id":1'));
CALL pg_temp.add('dup', 'ts twice', pg_temp.ev(extra => '"ts":"2024-03-01T10:00:00Z"'));
CALL pg_temp.add('dup', 'escaped duplicate of type', pg_temp.ev(extra => '"t\u0079pe":"click"'));
CALL pg_temp.add('dup', 'nested duplicates do not count',
		pg_temp.ev(extra => '"x":{"ad_id":1},"y":{"ad_id":2}'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'dup' ORDER BY id;

-- missing_field, for each field
CALL pg_temp.add('missing', 'empty object', '{}');
CALL pg_temp.add('missing', 'event_id', pg_temp.ev(event_id => NULL));
CALL pg_temp.add('missing', 'type', pg_temp.ev(type => NULL));
CALL pg_temp.add('missing', 'ad_id', pg_temp.ev(ad_id => NULL));
CALL pg_temp.add('missing', 'campaign_id', pg_temp.ev(campaign_id => NULL));
CALL pg_temp.add('missing', 'user_id', pg_temp.ev(user_id => NULL));
CALL pg_temp.add('missing', 'store_id', pg_temp.ev(store_id => NULL));
CALL pg_temp.add('missing', 'ts', pg_temp.ev(ts => NULL));
CALL pg_temp.add('missing', 'ts only nested', pg_temp.ev(ts => NULL, extra => '"meta":{"ts":1}'));
CALL pg_temp.add('missing', 'key case matters', pg_temp.ev(ts => NULL, extra => '"TS":1709287200000'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'missing' ORDER BY id;

-- wrong_type
CALL pg_temp.add('type', 'event_id number', pg_temp.ev(event_id => '42'));
CALL pg_temp.add('type', 'event_id null', pg_temp.ev(event_id => 'null'));
CALL pg_temp.add('type', 'type number', pg_temp.ev(type => '1'));
CALL pg_temp.add('type', 'type array', pg_temp.ev(type => '["click"]'));
CALL pg_temp.add('type', 'ad_id string', pg_temp.ev(ad_id => '"1"'));
CALL pg_temp.add('type', 'ad_id 1.0', pg_temp.ev(ad_id => '1.0'));
CALL pg_temp.add('type', 'ad_id 1e3', pg_temp.ev(ad_id => '1e3'));
CALL pg_temp.add('type', 'campaign_id true', pg_temp.ev(campaign_id => 'true'));
CALL pg_temp.add('type', 'user_id null', pg_temp.ev(user_id => 'null'));
CALL pg_temp.add('type', 'store_id object', pg_temp.ev(store_id => '{"id":4}'));
CALL pg_temp.add('type', 'ts fraction', pg_temp.ev(ts => '1709287200000.5'));
CALL pg_temp.add('type', 'ts boolean', pg_temp.ev(ts => 'false'));
CALL pg_temp.add('type', 'ts array', pg_temp.ev(ts => '[1709287200000]'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'type' ORDER BY id;

-- invalid_uuid
CALL pg_temp.add('uuid', 'not a uuid', pg_temp.ev(event_id => '"not-a-uuid"'));
CALL pg_temp.add('uuid', 'no dashes', pg_temp.ev(event_id => '"f47ac10b58cc4372a5670e02b2c3d479"'));
CALL pg_temp.add('uuid', 'braces', pg_temp.ev(event_id => '"{f47ac10b-58cc-4372-a567-0e02b2c3d479}"'));
CALL pg_temp.add('uuid', 'non-hex digit', pg_temp.ev(event_id => '"g47ac10b-58cc-4372-a567-0e02b2c3d479"'));
CALL pg_temp.add('uuid', 'dash misplaced', pg_temp.ev(event_id => '"f47ac10b5-8cc-4372-a567-0e02b2c3d479"'));
CALL pg_temp.add('uuid', 'empty string', pg_temp.ev(event_id => '""'));
CALL pg_temp.add('uuid', 'surrounding space', pg_temp.ev(event_id => '" f47ac10b-58cc-4372-a567-0e02b2c3d479"'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'uuid' ORDER BY id;

-- unknown_type
CALL pg_temp.add('kind', 'view', pg_temp.ev(type => '"view"'));
CALL pg_temp.add('kind', 'capitalised', pg_temp.ev(type => '"Impression"'));
CALL pg_temp.add('kind', 'trailing space', pg_temp.ev(type => '"click "'));
CALL pg_temp.add('kind', 'empty', pg_temp.ev(type => '""'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'kind' ORDER BY id;

-- out_of_range
CALL pg_temp.add('range', 'ad_id int64 max + 1', pg_temp.ev(ad_id => '9223372036854775808'));
CALL pg_temp.add('range', 'campaign_id 20 digits', pg_temp.ev(campaign_id => '12345678901234567890'));
CALL pg_temp.add('range', 'user_id below int64 min', pg_temp.ev(user_id => '-9223372036854775809'));
CALL pg_temp.add('range', 'ts ms before 1970', pg_temp.ev(ts => '-1'));
CALL pg_temp.add('range', 'ts ms after 9999', pg_temp.ev(ts => '253402300800000'));
CALL pg_temp.add('range', 'ts ms beyond int64', pg_temp.ev(ts => '99999999999999999999'));
CALL pg_temp.add('range', 'ts RFC 3339 before 1970', pg_temp.ev(ts => '"1969-12-31T23:59:59.999999Z"'));
CALL pg_temp.add('range', 'ts RFC 3339 offset pushes before 1970', pg_temp.ev(ts => '"1970-01-01T00:30:00+01:00"'));
CALL pg_temp.add('range', 'ts RFC 3339 offset pushes past 9999', pg_temp.ev(ts => '"9999-12-31T23:30:00-01:00"'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'range' ORDER BY id;

-- negative_id
CALL pg_temp.add('neg', 'ad_id', pg_temp.ev(ad_id => '-1'));
CALL pg_temp.add('neg', 'campaign_id', pg_temp.ev(campaign_id => '-2'));
CALL pg_temp.add('neg', 'user_id int64 min', pg_temp.ev(user_id => '-9223372036854775808'));
CALL pg_temp.add('neg', 'store_id', pg_temp.ev(store_id => '-4'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'neg' ORDER BY id;

-- invalid_timestamp
CALL pg_temp.add('ts', 'not a time', pg_temp.ev(ts => '"yesterday"'));
CALL pg_temp.add('ts', 'digits as a string', pg_temp.ev(ts => '"1709287200000"'));
CALL pg_temp.add('ts', 'no offset', pg_temp.ev(ts => '"2024-03-01T10:00:00"'));
CALL pg_temp.add('ts', 'offset without colon', pg_temp.ev(ts => '"2024-03-01T10:00:00+0100"'));
CALL pg_temp.add('ts', 'offset hour 24', pg_temp.ev(ts => '"2024-03-01T10:00:00+24:00"'));
CALL pg_temp.add('ts', 'date only', pg_temp.ev(ts => '"2024-03-01"'));
CALL pg_temp.add('ts', 'February 30', pg_temp.ev(ts => '"2024-02-30T00:00:00Z"'));
CALL pg_temp.add('ts', 'February 29 of a common year', pg_temp.ev(ts => '"2023-02-29T00:00:00Z"'));
CALL pg_temp.add('ts', 'February 29 of 1900', pg_temp.ev(ts => '"1900-02-29T00:00:00Z"'));
CALL pg_temp.add('ts', 'month 13', pg_temp.ev(ts => '"2024-13-01T00:00:00Z"'));
CALL pg_temp.add('ts', 'day 0', pg_temp.ev(ts => '"2024-03-00T00:00:00Z"'));
CALL pg_temp.add('ts', 'hour 24', pg_temp.ev(ts => '"2024-03-01T24:00:00Z"'));
CALL pg_temp.add('ts', 'leap second', pg_temp.ev(ts => '"2016-12-31T23:59:60Z"'));
CALL pg_temp.add('ts', 'empty fraction', pg_temp.ev(ts => '"2024-03-01T10:00:00.Z"'));
CALL pg_temp.add('ts', 'ten fraction digits', pg_temp.ev(ts => '"2024-03-01T10:00:00.1234567890Z"'));
CALL pg_temp.add('ts', 'trailing characters', pg_temp.ev(ts => '"2024-03-01T10:00:00Z "'));
CALL pg_temp.add('ts', 'two-digit year', pg_temp.ev(ts => '"24-03-01T10:00:00Z"'));
CALL pg_temp.add('ts', 'slash separators', pg_temp.ev(ts => '"2024/03/01T10:00:00Z"'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'ts' ORDER BY id;

-------------------------------------------------------------------------------
-- Precedence: with two defects, the earlier check wins
-------------------------------------------------------------------------------

-- oversized beats nul_byte and invalid_utf8
SELECT reason FROM adstream.validate_event(
	set_byte(set_byte(convert_to(repeat(' ', 1048577), 'UTF8'), 0, 0), 1, 255));
-- nul_byte beats invalid_utf8, even when the NUL comes later
SELECT reason, detail FROM adstream.validate_event('\xff00'::bytea);
SELECT reason, detail FROM adstream.validate_event('\x7b2261223a22ff2200'::bytea);
-- invalid_utf8 beats invalid_json, even after the syntax error
SELECT reason, detail FROM adstream.validate_event('\x7b7b7b2261223a22ff227d'::bytea);
SELECT reason, detail FROM adstream.validate_event('\x5b31ff'::bytea);

CALL pg_temp.add('prec', 'invalid_json beats not_object', '[1,');
CALL pg_temp.add('prec', 'duplicate_key beats missing_field', '{"ts":1,"ts":2}');
CALL pg_temp.add('prec', 'duplicate_key beats field checks',
		pg_temp.ev(event_id => '"nope"', extra => '"store_id":-1'));
CALL pg_temp.add('prec', 'first duplicate reported',
		pg_temp.ev(extra => '"ts":1,"event_id":"x"'));
CALL pg_temp.add('prec', 'event_id before missing ts',
		pg_temp.ev(event_id => '"nope"', ts => NULL));
CALL pg_temp.add('prec', 'missing event_id before wrong type',
		pg_temp.ev(event_id => NULL, type => '7'));
CALL pg_temp.add('prec', 'unknown type before negative ad_id',
		pg_temp.ev(type => '"view"', ad_id => '-1'));
CALL pg_temp.add('prec', 'missing ad_id before negative campaign_id',
		pg_temp.ev(ad_id => NULL, campaign_id => '-1'));
CALL pg_temp.add('prec', 'out of range campaign_id before wrong user_id',
		pg_temp.ev(campaign_id => '99999999999999999999', user_id => '"3"'));
CALL pg_temp.add('prec', 'negative store_id before invalid ts',
		pg_temp.ev(store_id => '-4', ts => '"never"'));
CALL pg_temp.add('prec', 'wrong user_id before missing store_id',
		pg_temp.ev(user_id => '3.5', store_id => NULL));
CALL pg_temp.add('prec', 'out_of_range beats negative_id',
		pg_temp.ev(ad_id => '-99999999999999999999'));
SELECT label, reason, detail FROM cases c, adstream.validate_event(c.payload) v
 WHERE section = 'prec' ORDER BY id;

-- Failed validation returns only reason and detail; a valid one no detail.
SELECT count(*) FILTER (WHERE reason <> 'ok' AND detail IS NULL) AS failures_without_detail,
	   count(*) FILTER (WHERE reason <> 'ok' AND num_nonnulls(event_id, type, ad_id, campaign_id, user_id, store_id, ts) > 0) AS failures_with_values,
	   count(*) FILTER (WHERE reason = 'ok' AND (detail IS NOT NULL OR num_nulls(event_id, type, ad_id, campaign_id, user_id, store_id, ts) > 0)) AS bad_successes
  FROM cases c, adstream.validate_event(c.payload) v;

-- The text and bytea forms agree on every case that is valid UTF-8.
SELECT count(*) AS disagreements
  FROM cases c
 WHERE c.section <> 'utf8'
   AND adstream.validate_event(convert_from(c.payload, 'UTF8'))
	   IS DISTINCT FROM adstream.validate_event(c.payload);

-- Every reason code the parser decides (all but the three checked one by
-- one above) occurs among the cases.
SELECT r AS reason_not_covered
  FROM unnest(ARRAY['ok', 'invalid_utf8', 'invalid_json', 'not_object', 'duplicate_key',
					'missing_field', 'wrong_type', 'invalid_uuid', 'unknown_type',
					'out_of_range', 'negative_id', 'invalid_timestamp']) AS r
 WHERE r NOT IN (SELECT v.reason FROM cases c, adstream.validate_event(c.payload) v);
