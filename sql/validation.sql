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

-------------------------------------------------------------------------------
-- Orders: adstream.validate_order() runs the order parser (sources of kind
-- 'orders').  The message checks are shared with events; the fields are
-- order_id, user_id, store_id, amount, currency and ts, checked in that
-- order, and amount and currency add invalid_amount and invalid_currency.
-------------------------------------------------------------------------------

-- ord(): a valid order, with any field's raw JSON replaced (NULL omits the
-- field) and optional extra members appended.
CREATE FUNCTION pg_temp.ord(
	order_id text DEFAULT '"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55"',
	user_id text DEFAULT '99812',
	store_id text DEFAULT '5',
	amount text DEFAULT '"42.50"',
	currency text DEFAULT '"EUR"',
	ts text DEFAULT '"2024-03-01T10:00:00Z"',
	extra text DEFAULT NULL)
RETURNS text LANGUAGE sql IMMUTABLE
RETURN '{' || concat_ws(',',
		'"order_id":' || order_id, '"user_id":' || user_id, '"store_id":' || store_id,
		'"amount":' || amount, '"currency":' || currency, '"ts":' || ts, extra) || '}';

SELECT pg_temp.ord() AS base_order;

CREATE TEMP TABLE order_cases (
	id		serial PRIMARY KEY,
	section	text NOT NULL,
	label	text NOT NULL,
	payload	bytea NOT NULL
);
CREATE PROCEDURE pg_temp.add_order(p_section text, p_label text, p_payload text)
LANGUAGE sql
AS $$ INSERT INTO order_cases (section, label, payload)
	  VALUES (p_section, p_label, convert_to(p_payload, 'UTF8')) $$;

-- The base order, through both signatures; NULL in, NULL out.
SELECT * FROM adstream.validate_order(pg_temp.ord());
SELECT * FROM adstream.validate_order(convert_to(pg_temp.ord(), 'UTF8'));
SELECT adstream.validate_order(NULL::text) IS NULL AS text_null,
	   adstream.validate_order(NULL::bytea) IS NULL AS bytea_null;
-- amount keeps the scale it was given
SELECT amount, scale(amount) AS scale, pg_typeof(amount) AS type
  FROM adstream.validate_order(pg_temp.ord());

-- Valid orders
CALL pg_temp.add_order('ok', 'amount as a JSON integer', pg_temp.ord(amount => '42'));
CALL pg_temp.add_order('ok', 'amount as a JSON fraction', pg_temp.ord(amount => '42.5'));
CALL pg_temp.add_order('ok', 'amount as an integer string', pg_temp.ord(amount => '"1999"'));
CALL pg_temp.add_order('ok', 'amount zero', pg_temp.ord(amount => '0'));
CALL pg_temp.add_order('ok', 'amount 0.00 as a string', pg_temp.ord(amount => '"0.00"'));
CALL pg_temp.add_order('ok', 'amount minus zero is zero', pg_temp.ord(amount => '-0'));
CALL pg_temp.add_order('ok', 'amount minus zero string', pg_temp.ord(amount => '"-0.0"'));
CALL pg_temp.add_order('ok', 'amount with 9 fraction digits', pg_temp.ord(amount => '"0.000000001"'));
CALL pg_temp.add_order('ok', 'amount at 18 + 9 digits', pg_temp.ord(amount => '999999999999999999.999999999'));
CALL pg_temp.add_order('ok', 'amount string at 18 + 9 digits', pg_temp.ord(amount => '"999999999999999999.999999999"'));
CALL pg_temp.add_order('ok', 'amount and currency escaped', pg_temp.ord(amount => '"4\u0032.5"', currency => '"\u0055SD"'));
CALL pg_temp.add_order('ok', 'ts epoch ms', pg_temp.ord(ts => '1709287200123'));
CALL pg_temp.add_order('ok', 'ts RFC 3339 with offset and fraction', pg_temp.ord(ts => '"2024-03-01T15:30:00.25+05:30"'));
CALL pg_temp.add_order('ok', 'ts RFC 3339 lower-case t and z', pg_temp.ord(ts => '"2024-03-01t10:00:00z"'));
CALL pg_temp.add_order('ok', 'ts far in the future (future_timestamp is the worker''s check)',
		pg_temp.ord(ts => '"9999-12-31T23:59:59Z"'));
CALL pg_temp.add_order('ok', 'upper-case order_id', pg_temp.ord(order_id => '"9B2D7C1E-4A5F-4E3B-8C6D-2F1A0E9B7C55"'));
CALL pg_temp.add_order('ok', 'ids at 0 and int64 max', pg_temp.ord(user_id => '0', store_id => '9223372036854775807'));
CALL pg_temp.add_order('ok', 'extra and event fields are ignored, and may repeat',
		pg_temp.ord(extra => '"type":"click","ad_id":1,"ad_id":"x","items":[{"sku":"a","amount":-1}]'));
CALL pg_temp.add_order('ok', 'members in another order, with whitespace',
		E' {"ts" : 1709287200000,\n "currency" : "JPY", "amount" : 1500, "store_id" : 5, "user_id" : 7,\n'
		'  "order_id" : "9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55"}\n');
SELECT label, reason, detail, order_id, user_id, store_id, amount, currency, ts
  FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'ok' ORDER BY id;

-- The message checks are those of events.
SELECT reason, detail FROM adstream.validate_order('');
SELECT reason, detail FROM adstream.validate_order(pg_temp.ord() || repeat(' ', 1048577 - length(pg_temp.ord())));
SELECT reason, detail FROM adstream.validate_order(convert_to(pg_temp.ord(), 'UTF8') || '\x00'::bytea);
SELECT reason, detail FROM adstream.validate_order(
	convert_to('{"currency":"EU', 'UTF8') || '\xff227d'::bytea);

-- invalid_json
CALL pg_temp.add_order('json', 'unterminated object', '{');
CALL pg_temp.add_order('json', 'truncated order', left(pg_temp.ord(), -1));
CALL pg_temp.add_order('json', 'trailing garbage', pg_temp.ord() || ',');
CALL pg_temp.add_order('json', 'amount with a leading zero', pg_temp.ord(amount => '042'));
CALL pg_temp.add_order('json', 'amount with a plus sign', pg_temp.ord(amount => '+42'));
CALL pg_temp.add_order('json', 'amount with a bare point', pg_temp.ord(amount => '42.'));
CALL pg_temp.add_order('json', 'amount with a decimal comma', pg_temp.ord(amount => '42,50'));
CALL pg_temp.add_order('json', 'unquoted currency', pg_temp.ord(currency => 'EUR'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'json' ORDER BY id;

-- not_object
CALL pg_temp.add_order('notobj', 'array', '[' || pg_temp.ord() || ']');
CALL pg_temp.add_order('notobj', 'string', '"order"');
CALL pg_temp.add_order('notobj', 'number', '42.50');
CALL pg_temp.add_order('notobj', 'null', 'null');
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'notobj' ORDER BY id;

-- duplicate_key (order fields only)
CALL pg_temp.add_order('dup', 'order_id twice', pg_temp.ord(extra => '"order_id":"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55"'));
CALL pg_temp.add_order('dup', 'amount twice', pg_temp.ord(extra => '"amount":"42.50"'));
CALL pg_temp.add_order('dup', 'escaped duplicate of currency', pg_temp.ord(extra => '"curr\u0065ncy":"USD"'));
CALL pg_temp.add_order('dup', 'ts twice in other forms', pg_temp.ord(extra => '"ts":1709287200000'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'dup' ORDER BY id;

-- missing_field, for each field
CALL pg_temp.add_order('missing', 'empty object', '{}');
CALL pg_temp.add_order('missing', 'order_id', pg_temp.ord(order_id => NULL));
CALL pg_temp.add_order('missing', 'user_id', pg_temp.ord(user_id => NULL));
CALL pg_temp.add_order('missing', 'store_id', pg_temp.ord(store_id => NULL));
CALL pg_temp.add_order('missing', 'amount', pg_temp.ord(amount => NULL));
CALL pg_temp.add_order('missing', 'currency', pg_temp.ord(currency => NULL));
CALL pg_temp.add_order('missing', 'ts', pg_temp.ord(ts => NULL));
CALL pg_temp.add_order('missing', 'an ad event is not an order', pg_temp.ev());
CALL pg_temp.add_order('missing', 'amount only nested', pg_temp.ord(amount => NULL, extra => '"total":{"amount":"42.50"}'));
CALL pg_temp.add_order('missing', 'key case matters', pg_temp.ord(currency => NULL, extra => '"Currency":"EUR"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'missing' ORDER BY id;

-- wrong_type
CALL pg_temp.add_order('type', 'order_id number', pg_temp.ord(order_id => '42'));
CALL pg_temp.add_order('type', 'order_id null', pg_temp.ord(order_id => 'null'));
CALL pg_temp.add_order('type', 'user_id string', pg_temp.ord(user_id => '"99812"'));
CALL pg_temp.add_order('type', 'user_id 1e3', pg_temp.ord(user_id => '1e3'));
CALL pg_temp.add_order('type', 'store_id fraction', pg_temp.ord(store_id => '5.0'));
CALL pg_temp.add_order('type', 'amount true', pg_temp.ord(amount => 'true'));
CALL pg_temp.add_order('type', 'amount null', pg_temp.ord(amount => 'null'));
CALL pg_temp.add_order('type', 'amount array', pg_temp.ord(amount => '["42.50"]'));
CALL pg_temp.add_order('type', 'amount object', pg_temp.ord(amount => '{"value":"42.50","currency":"EUR"}'));
CALL pg_temp.add_order('type', 'currency number', pg_temp.ord(currency => '978'));
CALL pg_temp.add_order('type', 'currency null', pg_temp.ord(currency => 'null'));
CALL pg_temp.add_order('type', 'currency array', pg_temp.ord(currency => '["EUR"]'));
CALL pg_temp.add_order('type', 'ts boolean', pg_temp.ord(ts => 'true'));
CALL pg_temp.add_order('type', 'ts fraction', pg_temp.ord(ts => '1709287200000.5'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'type' ORDER BY id;

-- invalid_uuid
CALL pg_temp.add_order('uuid', 'not a uuid', pg_temp.ord(order_id => '"order-1"'));
CALL pg_temp.add_order('uuid', 'no dashes', pg_temp.ord(order_id => '"9b2d7c1e4a5f4e3b8c6d2f1a0e9b7c55"'));
CALL pg_temp.add_order('uuid', 'braces', pg_temp.ord(order_id => '"{9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c55}"'));
CALL pg_temp.add_order('uuid', 'one digit short', pg_temp.ord(order_id => '"9b2d7c1e-4a5f-4e3b-8c6d-2f1a0e9b7c5"'));
CALL pg_temp.add_order('uuid', 'empty string', pg_temp.ord(order_id => '""'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'uuid' ORDER BY id;

-- out_of_range
CALL pg_temp.add_order('range', 'user_id int64 max + 1', pg_temp.ord(user_id => '9223372036854775808'));
CALL pg_temp.add_order('range', 'store_id below int64 min', pg_temp.ord(store_id => '-9223372036854775809'));
CALL pg_temp.add_order('range', 'amount with 19 integer digits', pg_temp.ord(amount => '1000000000000000000'));
CALL pg_temp.add_order('range', 'amount string with 19 integer digits', pg_temp.ord(amount => '"1000000000000000000.5"'));
CALL pg_temp.add_order('range', 'amount with 10 fraction digits', pg_temp.ord(amount => '0.0000000001'));
CALL pg_temp.add_order('range', 'amount string with 10 fraction digits (trailing zero counts)',
		pg_temp.ord(amount => '"1.1000000000"'));
CALL pg_temp.add_order('range', 'amount with 40 escaped digits',
		pg_temp.ord(amount => '"' || repeat('\u0039', 40) || '"'));
CALL pg_temp.add_order('range', 'too many integer digits reported before fraction digits',
		pg_temp.ord(amount => '"1234567890123456789.1234567890"'));
CALL pg_temp.add_order('range', 'ts ms before 1970', pg_temp.ord(ts => '-1'));
CALL pg_temp.add_order('range', 'ts RFC 3339 past 9999', pg_temp.ord(ts => '"9999-12-31T23:30:00-01:00"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'range' ORDER BY id;

-- negative_id
CALL pg_temp.add_order('neg', 'user_id', pg_temp.ord(user_id => '-1'));
CALL pg_temp.add_order('neg', 'store_id int64 min', pg_temp.ord(store_id => '-9223372036854775808'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'neg' ORDER BY id;

-- invalid_amount: malformed text, an exponent, a negative value
CALL pg_temp.add_order('amount', 'negative number', pg_temp.ord(amount => '-42.50'));
CALL pg_temp.add_order('amount', 'negative cent', pg_temp.ord(amount => '-0.01'));
CALL pg_temp.add_order('amount', 'negative string', pg_temp.ord(amount => '"-1"'));
CALL pg_temp.add_order('amount', 'exponent in a number', pg_temp.ord(amount => '4.25e1'));
CALL pg_temp.add_order('amount', 'exponent in a string', pg_temp.ord(amount => '"1E-2"'));
CALL pg_temp.add_order('amount', 'negative with an exponent', pg_temp.ord(amount => '-1e3'));
CALL pg_temp.add_order('amount', 'empty string', pg_temp.ord(amount => '""'));
CALL pg_temp.add_order('amount', 'leading space', pg_temp.ord(amount => '" 42.50"'));
CALL pg_temp.add_order('amount', 'trailing currency', pg_temp.ord(amount => '"42.50 EUR"'));
CALL pg_temp.add_order('amount', 'leading zero in a string', pg_temp.ord(amount => '"042"'));
CALL pg_temp.add_order('amount', 'plus sign in a string', pg_temp.ord(amount => '"+42"'));
CALL pg_temp.add_order('amount', 'bare point in a string', pg_temp.ord(amount => '"42."'));
CALL pg_temp.add_order('amount', 'no integer part', pg_temp.ord(amount => '".5"'));
CALL pg_temp.add_order('amount', 'decimal comma', pg_temp.ord(amount => '"42,50"'));
CALL pg_temp.add_order('amount', 'hexadecimal', pg_temp.ord(amount => '"0x10"'));
CALL pg_temp.add_order('amount', 'NaN', pg_temp.ord(amount => '"NaN"'));
CALL pg_temp.add_order('amount', 'Infinity', pg_temp.ord(amount => '"Infinity"'));
CALL pg_temp.add_order('amount', 'incomplete exponent', pg_temp.ord(amount => '"1e"'));
CALL pg_temp.add_order('amount', 'minus sign alone', pg_temp.ord(amount => '"-"'));
CALL pg_temp.add_order('amount', 'non-ASCII digit', pg_temp.ord(amount => '"\u0664\u0662"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'amount' ORDER BY id;

-- invalid_currency: exactly three upper-case letters A-Z
CALL pg_temp.add_order('currency', 'lower case', pg_temp.ord(currency => '"eur"'));
CALL pg_temp.add_order('currency', 'mixed case', pg_temp.ord(currency => '"Eur"'));
CALL pg_temp.add_order('currency', 'two letters', pg_temp.ord(currency => '"EU"'));
CALL pg_temp.add_order('currency', 'four letters', pg_temp.ord(currency => '"EURO"'));
CALL pg_temp.add_order('currency', 'empty', pg_temp.ord(currency => '""'));
CALL pg_temp.add_order('currency', 'digit', pg_temp.ord(currency => '"E1R"'));
CALL pg_temp.add_order('currency', 'ISO numeric code as a string', pg_temp.ord(currency => '"978"'));
CALL pg_temp.add_order('currency', 'surrounding space', pg_temp.ord(currency => '" EUR"'));
CALL pg_temp.add_order('currency', 'currency sign', pg_temp.ord(currency => '"\u20ac"'));
CALL pg_temp.add_order('currency', 'non-ASCII letter', pg_temp.ord(currency => '"\u00c9UR"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'currency' ORDER BY id;

-- invalid_timestamp
CALL pg_temp.add_order('ts', 'not a time', pg_temp.ord(ts => '"now"'));
CALL pg_temp.add_order('ts', 'no offset', pg_temp.ord(ts => '"2024-03-01T10:00:00"'));
CALL pg_temp.add_order('ts', 'date only', pg_temp.ord(ts => '"2024-03-01"'));
CALL pg_temp.add_order('ts', 'February 30', pg_temp.ord(ts => '"2024-02-30T10:00:00Z"'));
CALL pg_temp.add_order('ts', 'digits as a string', pg_temp.ord(ts => '"1709287200000"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'ts' ORDER BY id;

-- Precedence: fields are checked in contract order, and within amount a
-- malformed text before an exponent before a sign before the digit limits.
CALL pg_temp.add_order('prec', 'duplicate_key beats missing_field', '{"amount":1,"amount":2}');
CALL pg_temp.add_order('prec', 'invalid order_id before missing user_id',
		pg_temp.ord(order_id => '"x"', user_id => NULL));
CALL pg_temp.add_order('prec', 'negative user_id before invalid amount',
		pg_temp.ord(user_id => '-1', amount => '"abc"'));
CALL pg_temp.add_order('prec', 'wrong store_id before missing amount',
		pg_temp.ord(store_id => '"5"', amount => NULL));
CALL pg_temp.add_order('prec', 'invalid amount before invalid currency',
		pg_temp.ord(amount => '"-5"', currency => '"eur"'));
CALL pg_temp.add_order('prec', 'amount out of range before invalid currency',
		pg_temp.ord(amount => '12345678901234567890', currency => '"eur"'));
CALL pg_temp.add_order('prec', 'invalid currency before invalid ts',
		pg_temp.ord(currency => '"eur"', ts => '"never"'));
CALL pg_temp.add_order('prec', 'missing currency before wrong ts',
		pg_temp.ord(currency => NULL, ts => 'false'));
CALL pg_temp.add_order('prec', 'exponent beats negative', pg_temp.ord(amount => '"-5e2"'));
CALL pg_temp.add_order('prec', 'negative beats too many digits', pg_temp.ord(amount => '"-12345678901234567890"'));
CALL pg_temp.add_order('prec', 'malformed beats exponent', pg_temp.ord(amount => '"1e5x"'));
SELECT label, reason, detail FROM order_cases c, adstream.validate_order(c.payload) v
 WHERE section = 'prec' ORDER BY id;

-- Failed validation returns only reason and detail; a valid one no detail.
SELECT count(*) FILTER (WHERE reason <> 'ok' AND detail IS NULL) AS failures_without_detail,
	   count(*) FILTER (WHERE reason <> 'ok' AND num_nonnulls(order_id, user_id, store_id, amount, currency, ts) > 0) AS failures_with_values,
	   count(*) FILTER (WHERE reason = 'ok' AND (detail IS NOT NULL OR num_nulls(order_id, user_id, store_id, amount, currency, ts) > 0)) AS bad_successes
  FROM order_cases c, adstream.validate_order(c.payload) v;

-- The text and bytea forms agree.
SELECT count(*) AS disagreements
  FROM order_cases c
 WHERE adstream.validate_order(convert_from(c.payload, 'UTF8'))
	   IS DISTINCT FROM adstream.validate_order(c.payload);

-- The event parser and the order parser reject what is not theirs.
SELECT (adstream.validate_event(pg_temp.ord())).reason AS order_as_event,
	   (adstream.validate_order(pg_temp.ev())).reason AS event_as_order;

-- Every reason code the order parser decides occurs among the cases.
SELECT r AS order_reason_not_covered
  FROM unnest(ARRAY['ok', 'invalid_json', 'not_object', 'duplicate_key', 'missing_field',
					'wrong_type', 'invalid_uuid', 'out_of_range', 'negative_id',
					'invalid_amount', 'invalid_currency', 'invalid_timestamp']) AS r
 WHERE r NOT IN (SELECT v.reason FROM order_cases c, adstream.validate_order(c.payload) v);
