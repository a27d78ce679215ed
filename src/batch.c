/*
 * batch.c
 *     The one transaction per batch that makes adstream exactly-once.
 *
 * In a single transaction a batch:
 *   1. takes a shared lock that keeps dedup state from being expired under
 *      it, and then reads (in a snapshot taken after the lock) up to where
 *      the source's dedup state has expired;
 *   2. classifies every message: dead letter (parser reason, future_timestamp,
 *      too_late: its hour's dedup state is given up), duplicate within the
 *      batch, or candidate;
 *   3. makes sure the time partitions it is about to write exist;
 *   4. claims the candidates' event ids in the shared dedup index
 *      (src/dedup_index.c): those claimed are new, the rest were seen
 *      before (duplicates); the claimed ids are appended to dedup_log, which
 *      makes the claim durable (orders are deduplicated by their table);
 *      an id another worker's batch holds uncommitted counts as a duplicate,
 *      confirmed in step 7;
 *   5. upserts one row per (ad, minute) touched, pre-aggregated here, into
 *      this worker's stripe, and with sinks queues them in the outbox;
 *   6. writes dead letters;
 *   7. fails if a batch whose uncommitted claim step 4 took as a duplicate
 *      rolled back; the events whose ids a batch still running holds are
 *      set aside (adstream.set_aside), and taken up again, after its Kafka
 *      messages, by the next batch of their partition (step 2 on);
 *   8. advances adstream.offsets, but only from the offsets this worker
 *      last committed (a fence against a second worker on the partition);
 *   9. queues the minutes for the rollups, in this worker's own rows.
 * No row a batch updates is updated by another worker's batch (its stripe,
 * its partitions' offsets, its rollup rows; the outbox, dedup_log and
 * set_aside take inserts only), so a batch that waits in step 7 (a
 * re-drive, or a rewind's replay, waits there rather than set anything
 * aside) holds nothing another batch waits for.
 * If anything fails the transaction rolls back as a whole and the caller
 * retries the same messages, so a batch counts exactly once or not at all.
 *
 * Rows are sent in sorted order (event ids, then (ad, minute)) so that
 * concurrent workers lock index entries in the same order and do not
 * deadlock each other.
 *
 * After the transaction ends, ads_batch_settle() tells the dedup index
 * whether the claims stand.
 *
 * Order attribution, which reads what batches wrote, is in attribution.c.
 */
#include "batch.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "dedup_index.h"
#include "event_time.h"
#include "guc.h"
#include "sql_array.h"
#include "txn.h"


/* ---- hash set of event ids within a batch ---- */
typedef struct IdKey
{
	uint8		bytes[16];
} IdKey;

typedef struct IdEntry
{
	IdKey		key;
	int32		msg;			/* first message with this id */
	char		status;
} IdEntry;

#define SH_PREFIX idset
#define SH_ELEMENT_TYPE IdEntry
#define SH_KEY_TYPE IdKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) (k).bytes, 16)
#define SH_EQUAL(tb, a, b) (memcmp((a).bytes, (b).bytes, 16) == 0)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* ---- per-batch aggregates keyed by (ad, minute) ---- */
typedef struct AggKey
{
	int64		ad_id;
	int64		window_us;
} AggKey;

typedef struct AggEntry
{
	AggKey		key;
	int64		campaign_id;
	int64		impressions;
	int64		clicks;
	char		status;
} AggEntry;

#define SH_PREFIX aggmap
#define SH_ELEMENT_TYPE AggEntry
#define SH_KEY_TYPE AggKey
#define SH_KEY key
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) &(k), sizeof(AggKey))
#define SH_EQUAL(tb, a, b) ((a).ad_id == (b).ad_id && (a).window_us == (b).window_us)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* ---- hours for which partitions are known to exist (the finest grain) ---- */
typedef struct HourEntry
{
	int64		hour_us;
	char		status;
} HourEntry;

#define SH_PREFIX hourset
#define SH_ELEMENT_TYPE HourEntry
#define SH_KEY_TYPE int64
#define SH_KEY hour_us
#define SH_HASH_KEY(tb, k) hash_bytes((const unsigned char *) &(k), sizeof(int64))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

#define MAX_ENSURED_HOURS 20000

/* ---- prepared statements, kept for the life of the worker ---- */
enum
{
	P_SOURCE_STATE,
	P_ENSURE,
	P_DEDUP_LOG,
	P_ORDERS,
	P_AD_EVENTS,
	P_AGG,
	P_PENDING,
	P_PUBLISHING,
	P_OUTBOX,
	P_REJECT,
	P_OFFSETS,
	P_REDRIVE_TAKE,
	P_REDRIVE_COUNTS,
	P_RECOUNT,
	P_REWINDS,
	P_ASIDE_TAKE,
	P_ASIDE_PUT,
	P__COUNT
};

static SPIPlanPtr plans[P__COUNT];

static const char *const plan_sql[P__COUNT] = {
	/*
	 * Up to where the source's dedup state has expired, and whether clicks
	 * must be kept: only while an orders source exists.
	 */
	[P_SOURCE_STATE] =
	"SELECT dedup_expired_before, EXISTS (SELECT 1 FROM adstream.sources WHERE kind = 'orders'), "
	"(SELECT dropped_before FROM adstream.partitioned_tables WHERE name = 'ad_stats_minute') "
	"FROM adstream.sources WHERE id = $1",
	[P_ENSURE] =
	"SELECT adstream.ensure_partitions('ad_stats_minute', $1), "
	"adstream.ensure_partitions('dedup_log', $1), adstream.ensure_partitions('ad_events', $1)",
	[P_DEDUP_LOG] =
	"INSERT INTO adstream.dedup_log (source_id, hour, seg, ids) "
	"SELECT $1, * FROM unnest($2::timestamptz[], $3::int4[], $4::bytea[])",
	/*
	 * A new order, unless stored before or judged by the node this one took
	 * its partition over from (orders_seen_elsewhere, a partition handoff);
	 * judged as it is stored when the ad-events watermark has passed it.
	 */
	[P_ORDERS] =
	"SELECT adstream._store_orders($1, $2, $3, $4, $5, $6, $7, $8)",
	[P_AD_EVENTS] =
	"INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts) "
	"SELECT $1, u.* FROM unnest($2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], "
	"$8::timestamptz[]) AS u",
	/* One row per (ad, minute) of the batch, under its source's id and stripe. */
	[P_AGG] =
	"INSERT INTO adstream.ad_stats_minute AS s (ad_id, campaign_id, window_start, impressions, clicks, source_id, stripe) "
	"SELECT u.*, $6, $7 FROM unnest($1::int8[], $2::int8[], $3::timestamptz[], $4::int8[], $5::int8[]) AS u "
	"ON CONFLICT (ad_id, window_start, source_id, stripe) DO UPDATE SET "
	"impressions = s.impressions + excluded.impressions, "
	"clicks = s.clicks + excluded.clicks, updated_at = now()",
	/*
	 * The (few, sorted) minutes touched, queued for the rollups in this
	 * worker's own rows: a row already pending is written again (a new
	 * version, locked until the batch ends), so that refresh_rollups, which
	 * forgets only the row versions it has rolled up, keeps it for the next
	 * refresh (docs/architecture.md, "Rollups").  No other worker writes
	 * these rows: no batch waits for another here.
	 */
	[P_PENDING] =
	"INSERT INTO adstream.rollup_pending AS p (window_start, source_id, worker) "
	"SELECT unnest($1::timestamptz[]), $2, $3 "
	"ON CONFLICT (window_start, source_id, worker) DO UPDATE SET window_start = excluded.window_start",
	[P_PUBLISHING] =
	"SELECT adstream._publishing()",
	/* In (ad, minute) order, like the upsert: version order is lock order. */
	[P_OUTBOX] =
	"INSERT INTO adstream.outbox (kind, ad_id, window_start) "
	"SELECT 'ad_stats', * FROM unnest($1::int8[], $2::timestamptz[])",
	[P_REJECT] =
	"INSERT INTO adstream.rejected_events (source, topic, partition, \"offset\", reason, detail, payload, payload_bytes) "
	"SELECT $1, $2, u.* FROM unnest($3::int4[], $4::int8[], $5::text[], $6::text[], $7::bytea[], $8::int4[]) AS u "
	"ON CONFLICT DO NOTHING",
	/*
	 * Every partition moves from the offset this worker committed last, or
	 * is new: a first offset, of a partition that is still the source's (a
	 * partition handed to another node, export_partitions, has neither).
	 */
	[P_OFFSETS] =
	"WITH b(partition, expected, next_offset, max_event_ts, accepted, duplicates, rejected) AS ("
	"  SELECT * FROM unnest($3::int4[], $4::int8[], $5::int8[], $6::timestamptz[], $7::int8[], $8::int8[], $9::int8[])), "
	"upd AS ("
	"  UPDATE adstream.offsets o SET next_offset = b.next_offset, "
	"    max_event_ts = greatest(o.max_event_ts, b.max_event_ts), "
	"    accepted = o.accepted + b.accepted, duplicates = o.duplicates + b.duplicates, "
	"    rejected = o.rejected + b.rejected, updated_at = now() "
	"  FROM b WHERE o.source = $1 AND o.topic = $2 AND o.partition = b.partition "
	"    AND b.expected >= 0 AND o.next_offset = b.expected RETURNING 1), "
	"ins AS ("
	"  INSERT INTO adstream.offsets (source, topic, partition, next_offset, max_event_ts, accepted, duplicates, rejected) "
	"  SELECT $1, $2, b.partition, b.next_offset, b.max_event_ts, b.accepted, b.duplicates, b.rejected "
	"  FROM b WHERE b.expected < 0 AND EXISTS (SELECT 1 FROM adstream.sources s WHERE s.name = $1 "
	"    AND (s.partitions IS NULL OR b.partition = ANY (s.partitions))) "
	"  ON CONFLICT DO NOTHING RETURNING 1) "
	"SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins)",
	/* A re-drive takes its dead letters away; those still rejected come back. */
	[P_REDRIVE_TAKE] =
	"WITH d AS (DELETE FROM adstream.rejected_events r USING unnest($3::int4[], $4::int8[]) AS u(partition, \"offset\") "
	"  WHERE r.source = $1 AND r.topic = $2 AND r.partition = u.partition AND r.\"offset\" = u.\"offset\" "
	"  AND r.redrive_generation IS NOT NULL RETURNING 1) "
	"SELECT count(*) FROM d",
	/* Dead letters now counted or found duplicates leave the rejected counter. */
	[P_REDRIVE_COUNTS] =
	"UPDATE adstream.offsets o SET accepted = o.accepted + b.accepted, duplicates = o.duplicates + b.duplicates, "
	"  rejected = o.rejected - b.accepted - b.duplicates, max_event_ts = greatest(o.max_event_ts, b.max_event_ts), "
	"  updated_at = now() "
	"FROM unnest($3::int4[], $4::int8[], $5::int8[], $6::timestamptz[]) AS b(partition, accepted, duplicates, max_event_ts) "
	"WHERE o.source = $1 AND o.topic = $2 AND o.partition = b.partition",
	/*
	 * A 'recount' rewind's replayed events of expired hours: each id once
	 * per rewind (in (rewind, id) order, as the index entries are locked).
	 */
	[P_RECOUNT] =
	"INSERT INTO adstream.rewind_ids AS r (rewind_id, event_id) "
	"SELECT * FROM unnest($1::int8[], $2::uuid[]) AS u(rewind_id, event_id) ORDER BY 1, 2 "
	"ON CONFLICT DO NOTHING RETURNING r.event_id",
	/*
	 * The replay's progress, with the offsets: its counters, and finished
	 * once the partition's position has passed to_offset.  Then the id set
	 * of a rewind all of whose partitions are finished goes.
	 */
	[P_REWINDS] =
	"WITH b(id, partition, next_offset, replayed, accepted, duplicates, rejected, skipped) AS ("
	"  SELECT * FROM unnest($1::int8[], $2::int4[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[])), "
	"upd AS ("
	"  UPDATE adstream.rewind_partitions r SET replayed = r.replayed + b.replayed, accepted = r.accepted + b.accepted, "
	"    duplicates = r.duplicates + b.duplicates, rejected = r.rejected + b.rejected, skipped = r.skipped + b.skipped, "
	"    finished_at = CASE WHEN b.next_offset >= r.to_offset THEN now() END "
	"  FROM b WHERE r.rewind_id = b.id AND r.partition = b.partition AND r.finished_at IS NULL "
	"  RETURNING r.rewind_id AS id, r.finished_at IS NOT NULL AS finished) "
	"SELECT count(*), array_agg(DISTINCT id) FILTER (WHERE finished) FROM upd",
	/* Events set aside on this worker's partitions, oldest first, taken for judging again. */
	[P_ASIDE_TAKE] =
	"DELETE FROM adstream.set_aside a WHERE a.source_id = $1 AND (a.partition, a.\"offset\") IN ("
	"  SELECT x.partition, x.\"offset\" FROM adstream.set_aside x WHERE x.source_id = $1 AND x.partition = ANY ($2) "
	"  ORDER BY 1, 2 LIMIT $3) "
	"RETURNING a.partition, a.\"offset\", a.event_id, a.type, a.ad_id, a.campaign_id, a.user_id, a.store_id, a.ts, a.payload",
	[P_ASIDE_PUT] =
	"INSERT INTO adstream.set_aside (source_id, partition, \"offset\", event_id, type, ad_id, campaign_id, user_id, "
	"store_id, ts, payload) "
	"SELECT $1, u.* FROM unnest($2::int4[], $3::int8[], $4::uuid[], $5::text[], $6::int8[], $7::int8[], $8::int8[], "
	"$9::int8[], $10::timestamptz[], $11::bytea[]) AS u",
};

static const Oid plan_args[P__COUNT][11] = {
	[P_SOURCE_STATE] = {INT4OID},
	[P_ENSURE] = {TIMESTAMPTZARRAYOID},
	[P_DEDUP_LOG] = {INT4OID, TIMESTAMPTZARRAYOID, INT4ARRAYOID, BYTEAARRAYOID},
	[P_ORDERS] = {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, INT4ARRAYOID},
	[P_AD_EVENTS] = {INT4OID, UUIDARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID},
	[P_AGG] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT4OID, INT2OID},
	[P_PENDING] = {TIMESTAMPTZARRAYOID, INT4OID, INT2OID},
	[P_OUTBOX] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID},
	[P_REJECT] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, BYTEAARRAYOID, INT4ARRAYOID},
	[P_OFFSETS] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID},
	[P_REDRIVE_TAKE] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID},
	[P_REDRIVE_COUNTS] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID},
	[P_RECOUNT] = {INT8ARRAYOID, UUIDARRAYOID},
	[P_REWINDS] = {INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID},
	[P_ASIDE_TAKE] = {INT4OID, INT4ARRAYOID, INT4OID},
	[P_ASIDE_PUT] = {INT4OID, INT4ARRAYOID, INT8ARRAYOID, UUIDARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, BYTEAARRAYOID},
};
static const int plan_nargs[P__COUNT] = {
	[P_SOURCE_STATE] = 1,[P_ENSURE] = 1,[P_DEDUP_LOG] = 4,[P_ORDERS] = 8,[P_AD_EVENTS] = 8,
	[P_AGG] = 7,[P_PENDING] = 3,[P_PUBLISHING] = 0,[P_OUTBOX] = 2,[P_REJECT] = 8,[P_OFFSETS] = 9,
	[P_REDRIVE_TAKE] = 4,[P_REDRIVE_COUNTS] = 6,[P_RECOUNT] = 2,[P_REWINDS] = 8,
	[P_ASIDE_TAKE] = 3,[P_ASIDE_PUT] = 11,
};

static int
exec_plan(int which, Datum *values, const char *nulls, bool read_only, int expect)
{
	int			rc;

	if (plans[which] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(plan_sql[which], plan_nargs[which],
									   (Oid *) plan_args[which]);

		if (plan == NULL)
			elog(ERROR, "adstream: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		plans[which] = plan;
	}
	rc = SPI_execute_plan(plans[which], values, nulls, read_only, 0);
	if (rc != expect)
		elog(ERROR, "adstream: statement %d failed: %s", which, SPI_result_code_string(rc));
	return rc;
}

/* ---- classification ---- */

/* The id that deduplicates a message, and its event time. */
static inline const uint8 *
msg_id(const AdsBatch *b, const AdsMsg *m)
{
	return b->is_orders ? m->order.order_id : m->ev.event_id;
}

static inline int64
msg_ts(const AdsBatch *b, const AdsMsg *m)
{
	return b->is_orders ? m->order.ts_us : m->ev.ts_us;
}

static int
cmp_msg_id(const void *x, const void *y, void *arg)
{
	const AdsBatch *b = (const AdsBatch *) arg;

	return memcmp(msg_id(b, &b->msgs[*(const int *) x]), msg_id(b, &b->msgs[*(const int *) y]), 16);
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

static int
cmp_agg(const void *a, const void *b)
{
	const AggEntry *x = *(AggEntry *const *) a;
	const AggEntry *y = *(AggEntry *const *) b;

	if (x->key.ad_id != y->key.ad_id)
		return x->key.ad_id < y->key.ad_id ? -1 : 1;
	if (x->key.window_us != y->key.window_us)
		return x->key.window_us < y->key.window_us ? -1 : 1;
	return 0;
}

/*
 * Decide each message's fate that does not need the dedup state.  An ad
 * event is too late only when the state that would catch its duplicate is
 * really gone: its hour's dedup state has expired (expired_before_us), or
 * its minute is past adstream.minute_retention.  So whether it counts does
 * not depend on batch boundaries, on how Kafka interleaves partitions, or on
 * when a replay happens; only on what expiry has given up, which it does
 * behind the slowest partition (adstream.expire_dedup_state()).
 */
static idset_hash *
classify(AdsBatch *b, int64 expired_before_us)
{
	int64		now_us = ads_timestamptz_to_unix_us(GetCurrentTimestamp());
	int64		future_limit = now_us + (int64) adstream_max_future_skew_s * USECS_PER_SEC;
	/*
	 * Minutes older than this are dropped, or were: counting into them would
	 * be lost (or would re-create a day that has only its rollups left).
	 */
	int64		retained_from = Max(now_us - (int64) adstream_minute_retention_s * USECS_PER_SEC,
									b->minutes_dropped_before_us);
	idset_hash *ids = idset_create(CurrentMemoryContext, b->nmsgs, NULL);

	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];

		p->in_batch = false;
		p->b_accepted = p->b_duplicates = p->b_rejected = 0;
		p->b_max_ts_us = PG_INT64_MIN;
		p->b_last = -1;
		p->b_rw_replayed = p->b_rw_accepted = p->b_rw_duplicates = 0;
		p->b_rw_rejected = p->b_rw_skipped = 0;
	}

	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		AdsPartition *p = &b->parts[m->part];
		IdEntry    *e;
		bool		found;
		IdKey		key;
		int64		ts = 0;

		/* An event taken up from set_aside lies below the stored offset. */
		if (!m->taken_up)
		{
			p->b_next = m->rkm->offset + 1;
			p->b_last = i;
		}
		else if (!p->in_batch)
			p->b_next = p->committed;
		p->in_batch = true;
		m->reason = m->parse_reason;
		/* A re-drive's messages are dead letters, not a replay of Kafka. */
		m->replay = !b->redrive && !m->taken_up && p->rw_id != 0 && m->rkm->offset < p->rw_to;
		m->recount = false;
		m->held_by = InvalidTransactionId;
		if (m->reason == ADS_OK)
		{
			ts = msg_ts(b, m);
			if (ts > future_limit)
				m->reason = ADS_R_FUTURE_TIMESTAMP;
			else if (m->replay && p->rw_replace && (ts < p->rw_from_us || ts >= p->rw_until_us))
			{
				/* Outside the replaced window: counted before, left as it is. */
				m->status = ADS_MSG_SKIPPED;
				continue;
			}
			/* Orders are deduplicated forever by their table's key: never too late. */
			else if (!b->is_orders &&
					 (ts < expired_before_us || ts < retained_from))
			{
				/*
				 * A 'recount' rewind counts an expired hour's event again,
				 * once per rewind (the operator chose to); a minute past
				 * retention stays too late, its row is gone.
				 */
				if (m->replay && !p->rw_replace && ts >= retained_from)
					m->recount = true;	/* its clicks were kept when first counted */
				else
					m->reason = ADS_R_TOO_LATE;
			}
		}
		if (m->reason != ADS_OK)
		{
			m->status = ADS_MSG_REJECTED;
			p->b_rejected++;
			continue;
		}
		/*
		 * An event taken up from set_aside moved its partition's watermark
		 * when it was read; it must not move it again: a rewind has reset it
		 * (NULL) to hold expiry until the replay has read its partition.
		 */
		if (!m->taken_up)
			p->b_max_ts_us = Max(p->b_max_ts_us, ts);

		memcpy(key.bytes, msg_id(b, m), 16);
		e = idset_insert(ids, key, &found);
		if (found)
		{
			m->status = ADS_MSG_DUPLICATE;
			p->b_duplicates++;
		}
		else
		{
			e->msg = i;
			m->status = m->recount ? ADS_MSG_RECOUNT : ADS_MSG_CANDIDATE;
		}
	}
	return ids;
}

static const char *
reject_detail(const AdsBatch *b, const AdsMsg *m, int64 expired_before_us)
{
	int64		now_us = ads_timestamptz_to_unix_us(GetCurrentTimestamp());

	switch (m->reason)
	{
		case ADS_R_FUTURE_TIMESTAMP:
			return psprintf("ts is %lld s ahead of the server clock; adstream.max_future_skew is %d s",
							(long long) ((msg_ts(b, m) - now_us) / USECS_PER_SEC),
							adstream_max_future_skew_s);
		case ADS_R_TOO_LATE:
			if (msg_ts(b, m) < now_us - (int64) adstream_minute_retention_s * USECS_PER_SEC)
				return psprintf("ts is older than adstream.minute_retention (%d s)",
								adstream_minute_retention_s);
			if (msg_ts(b, m) < b->minutes_dropped_before_us)
				return psprintf("retention dropped the minutes before %s (only their rollups are kept)",
								timestamptz_to_str(ads_unix_us_to_timestamptz(b->minutes_dropped_before_us)));
			return psprintf("the source's dedup state before %s has expired (adstream.dedup_horizon is %d s behind its slowest partition)",
							timestamptz_to_str(ads_unix_us_to_timestamptz(expired_before_us)),
							adstream_dedup_horizon_s);
		default:
			return m->detail;
	}
}

/* ---- the statements ---- */

static void
ensure_time_partitions(AdsBatch *b)
{
	AdsArray	hours;
	hourset_hash *seen = hourset_create(CurrentMemoryContext, 64, NULL);
	Datum		arg;

	ads_array_init(&hours, TIMESTAMPTZOID, b->nmsgs);
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		int64		hour;
		bool		found;

		if (m->status != ADS_MSG_CANDIDATE && m->status != ADS_MSG_RECOUNT)
			continue;
		hour = ads_hour_start_us(m->ev.ts_us);
		if (hourset_lookup(b->ensured, hour))
			continue;
		hourset_insert(seen, hour, &found);
		if (!found)
			ads_array_add_unix_us(&hours, hour);
	}
	if (hours.n == 0)
		return;

	arg = ads_array_datum(&hours);
	exec_plan(P_ENSURE, &arg, NULL, false, SPI_OK_SELECT);

	/* Dropped on any error by ads_batch_settle(). */
	if (b->ensured->members + hours.n > MAX_ENSURED_HOURS)
		hourset_reset(b->ensured);
	for (int i = 0; i < hours.n; i++)
	{
		bool		found;

		hourset_insert(b->ensured,
					   ads_timestamptz_to_unix_us(DatumGetTimestampTz(hours.values[i])), &found);
	}
}

/* Sorted indexes of the candidate messages, by id; returns how many. */
static int
sorted_candidates(AdsBatch *b, int **idx_out)
{
	int		   *idx = palloc(sizeof(int) * Max(b->nmsgs, 1));
	int			n = 0;

	for (int i = 0; i < b->nmsgs; i++)
		if (b->msgs[i].status == ADS_MSG_CANDIDATE)
			idx[n++] = i;
	qsort_arg(idx, n, sizeof(int), cmp_msg_id, b);
	*idx_out = idx;
	return n;
}

/* Count each candidate as accepted (new) or duplicate. */
static void
count_candidates(AdsBatch *b, const int *idx, int n)
{
	for (int i = 0; i < n; i++)
	{
		AdsMsg	   *m = &b->msgs[idx[i]];

		if (m->status == ADS_MSG_ACCEPTED)
			b->parts[m->part].b_accepted++;
		else
		{
			m->status = ADS_MSG_DUPLICATE;
			b->parts[m->part].b_duplicates++;
		}
	}
}

/*
 * Orders are remembered by the orders table itself: those inserted are new,
 * the other candidates were seen before.  adstream._store_orders() judges
 * the new ones the ad-events watermark has already passed as it stores
 * them (one row version each); the others wait for attribute_orders().
 */
static void
dedup_orders(AdsBatch *b, idset_hash *ids)
{
	int		   *idx;
	int			n = sorted_candidates(b, &idx);
	AdsArray	uuids,
				user,
				store,
				amount,
				currency,
				ts,
				part;
	Datum		args[8];

	if (n == 0)
		return;
	ads_array_init(&uuids, UUIDOID, n);
	ads_array_init(&user, INT8OID, n);
	ads_array_init(&store, INT8OID, n);
	ads_array_init(&amount, TEXTOID, n);
	ads_array_init(&currency, TEXTOID, n);
	ads_array_init(&ts, TIMESTAMPTZOID, n);
	ads_array_init(&part, INT4OID, n);
	for (int i = 0; i < n; i++)
	{
		AdsOrder   *o = &b->msgs[idx[i]].order;

		ads_array_add(&part, Int32GetDatum(b->msgs[idx[i]].rkm->partition));

		ads_array_add(&uuids, PointerGetDatum(o->order_id));
		ads_array_add(&user, Int64GetDatum(o->user_id));
		ads_array_add(&store, Int64GetDatum(o->store_id));
		ads_array_add(&amount, CStringGetTextDatum(o->amount));
		ads_array_add(&currency, CStringGetTextDatum(o->currency));
		ads_array_add_unix_us(&ts, o->ts_us);
	}
	args[0] = CStringGetTextDatum(b->source_name);
	args[1] = ads_array_datum(&uuids);
	args[2] = ads_array_datum(&user);
	args[3] = ads_array_datum(&store);
	args[4] = ads_array_datum(&amount);
	args[5] = ads_array_datum(&currency);
	args[6] = ads_array_datum(&ts);
	args[7] = ads_array_datum(&part);
	exec_plan(P_ORDERS, args, NULL, false, SPI_OK_SELECT);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		IdKey		key;
		IdEntry    *e;

		memcpy(key.bytes, DatumGetUUIDP(d)->data, 16);
		e = idset_lookup(ids, key);
		if (e == NULL)
			elog(ERROR, "adstream: dedup returned an id that was not sent");
		b->msgs[e->msg].status = ADS_MSG_ACCEPTED;
	}
	count_candidates(b, idx, n);
}

/*
 * Ad events: claim the candidates' ids in the shared dedup index, and log
 * the claimed ones to dedup_log, one row of concatenated ids per hour of
 * event time (all of one segment, which the index chose), in this
 * transaction.
 */
static void
dedup_events(AdsBatch *b)
{
	int		   *idx;
	int			n = sorted_candidates(b, &idx);
	const uint8 **idp;
	int32	   *hours;
	int32	   *segs;
	bool	   *is_new;
	TransactionId *held_by;
	AdsArray	row_hour,
				row_seg,
				row_ids;
	Datum		args[4];

	b->replay_held = false;
	if (n == 0)
		return;
	idp = palloc(sizeof(uint8 *) * n);
	hours = palloc(sizeof(int32) * n);
	segs = palloc(sizeof(int32) * n);
	is_new = palloc(sizeof(bool) * n);
	held_by = palloc(sizeof(TransactionId) * n);
	for (int i = 0; i < n; i++)
	{
		idp[i] = b->msgs[idx[i]].ev.event_id;
		hours[i] = ads_hour_number(b->msgs[idx[i]].ev.ts_us);
	}

	ads_dedup_claim(b->source_id, n, idp, hours, is_new, segs, held_by);
	for (int i = 0; i < n; i++)
	{
		if (is_new[i])
			b->msgs[idx[i]].status = ADS_MSG_ACCEPTED;
		b->msgs[idx[i]].held_by = held_by[i];
		b->replay_held |= (TransactionIdIsValid(held_by[i]) && b->msgs[idx[i]].replay);
	}
	count_candidates(b, idx, n);

	/* One dedup_log row per hour: the claimed ids of that hour, in id order. */
	ads_array_init(&row_hour, TIMESTAMPTZOID, n);
	ads_array_init(&row_seg, INT4OID, n);
	ads_array_init(&row_ids, BYTEAOID, n);
	for (int i = 0; i < n; i++)
	{
		int			h;
		int			count = 0;
		bytea	   *ids;
		char	   *p;
		int64		hour_us = (int64) hours[i] * USECS_PER_HOUR;

		if (!is_new[i])
			continue;
		for (h = 0; h < row_hour.n; h++)
			if (ads_timestamptz_to_unix_us(DatumGetTimestampTz(row_hour.values[h])) == hour_us)
				break;
		if (h < row_hour.n)
			continue;			/* this hour's row is built already */
		for (int j = i; j < n; j++)
		{
			count += (is_new[j] && hours[j] == hours[i]);
			if (is_new[j] && hours[j] == hours[i] && segs[j] != segs[i])
				elog(ERROR, "adstream: ids of one hour were claimed into two dedup segments");
		}
		ids = palloc(VARHDRSZ + 16 * count);
		SET_VARSIZE(ids, VARHDRSZ + 16 * count);
		p = VARDATA(ids);
		for (int j = i; j < n; j++)
			if (is_new[j] && hours[j] == hours[i])
			{
				memcpy(p, idp[j], 16);
				p += 16;
			}
		ads_array_add_unix_us(&row_hour, hour_us);
		ads_array_add(&row_seg, Int32GetDatum(segs[i]));
		ads_array_add(&row_ids, PointerGetDatum(ids));
	}
	if (row_hour.n == 0)
		return;
	args[0] = Int32GetDatum(b->source_id);
	args[1] = ads_array_datum(&row_hour);
	args[2] = ads_array_datum(&row_seg);
	args[3] = ads_array_datum(&row_ids);
	exec_plan(P_DEDUP_LOG, args, NULL, false, SPI_OK_INSERT);
}

/*
 * A 'recount' rewind's replayed events of hours whose dedup state is given
 * up: the dedup index no longer knows them, so the rewind's own id set
 * (adstream.rewind_ids, one row per rewind and id) decides, in this
 * transaction: an id inserted is counted again, one already there (an
 * earlier copy in the replay) is a duplicate.  So a recount adds each
 * expired event at most once, however many copies the range holds.
 */
static void
dedup_recount(AdsBatch *b, idset_hash *ids)
{
	AdsArray	rewind,
				uuids;
	Datum		args[2];
	int			n = 0;
	int		   *idx;

	for (int i = 0; i < b->nmsgs; i++)
		if (b->msgs[i].status == ADS_MSG_RECOUNT)
			n++;
	if (n == 0)
		return;
	idx = palloc(sizeof(int) * n);
	n = 0;
	for (int i = 0; i < b->nmsgs; i++)
		if (b->msgs[i].status == ADS_MSG_RECOUNT)
			idx[n++] = i;
	ads_array_init(&rewind, INT8OID, n);
	ads_array_init(&uuids, UUIDOID, n);
	for (int i = 0; i < n; i++)
	{
		AdsMsg	   *m = &b->msgs[idx[i]];

		ads_array_add(&rewind, Int64GetDatum(b->parts[m->part].rw_id));
		ads_array_add(&uuids, PointerGetDatum(m->ev.event_id));
	}
	args[0] = ads_array_datum(&rewind);
	args[1] = ads_array_datum(&uuids);
	exec_plan(P_RECOUNT, args, NULL, false, SPI_OK_INSERT_RETURNING);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		IdKey		key;
		IdEntry    *e;

		memcpy(key.bytes, DatumGetUUIDP(d)->data, 16);
		e = idset_lookup(ids, key);
		if (e == NULL || b->msgs[e->msg].status != ADS_MSG_RECOUNT)
			elog(ERROR, "adstream: recount returned an id that was not sent");
		b->msgs[e->msg].status = ADS_MSG_ACCEPTED;
	}
	for (int i = 0; i < n; i++)
	{
		AdsMsg	   *m = &b->msgs[idx[i]];

		if (m->status == ADS_MSG_ACCEPTED)
			b->parts[m->part].b_accepted++;
		else
		{
			m->status = ADS_MSG_DUPLICATE;
			b->parts[m->part].b_duplicates++;
		}
	}
}

/*
 * Keep the new clicks (and impressions, when view-through is on) for
 * attribution, in the same transaction as their counts.  Only while an
 * orders source exists: without one nothing would ever read them.
 */
static void
keep_for_attribution(AdsBatch *b)
{
	bool		impressions = adstream_view_through_window_s > 0;
	int			n = 0;
	AdsArray	ids,
				types,
				ad,
				camp,
				user,
				store,
				ts;
	Datum		args[8];

	/*
	 * An expired event a recount counts again is not kept again: it was
	 * when first counted (a replaced window's were removed, and are).
	 */
	for (int i = 0; i < b->nmsgs; i++)
		if (b->msgs[i].status == ADS_MSG_ACCEPTED && !b->msgs[i].recount &&
			(impressions || b->msgs[i].ev.type == ADS_EV_CLICK))
			n++;
	if (n == 0)
		return;

	ads_array_init(&ids, UUIDOID, n);
	ads_array_init(&types, TEXTOID, n);
	ads_array_init(&ad, INT8OID, n);
	ads_array_init(&camp, INT8OID, n);
	ads_array_init(&user, INT8OID, n);
	ads_array_init(&store, INT8OID, n);
	ads_array_init(&ts, TIMESTAMPTZOID, n);
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsEvent   *ev = &b->msgs[i].ev;

		if (b->msgs[i].status != ADS_MSG_ACCEPTED || b->msgs[i].recount ||
			(!impressions && ev->type != ADS_EV_CLICK))
			continue;
		ads_array_add(&ids, PointerGetDatum(ev->event_id));
		ads_array_add(&types, CStringGetTextDatum(ev->type == ADS_EV_CLICK ? "click" : "impression"));
		ads_array_add(&ad, Int64GetDatum(ev->ad_id));
		ads_array_add(&camp, Int64GetDatum(ev->campaign_id));
		ads_array_add(&user, Int64GetDatum(ev->user_id));
		ads_array_add(&store, Int64GetDatum(ev->store_id));
		ads_array_add_unix_us(&ts, ev->ts_us);
	}
	args[0] = Int32GetDatum(b->source_id);
	args[1] = ads_array_datum(&ids);
	args[2] = ads_array_datum(&types);
	args[3] = ads_array_datum(&ad);
	args[4] = ads_array_datum(&camp);
	args[5] = ads_array_datum(&user);
	args[6] = ads_array_datum(&store);
	args[7] = ads_array_datum(&ts);
	exec_plan(P_AD_EVENTS, args, NULL, false, SPI_OK_INSERT);
}

/*
 * The batch's accepted events summed per (ad, minute), sorted: the rows
 * aggregate_write() upserts.
 */
typedef struct AggRows
{
	int			n;
	AdsArray	ad,
				camp,
				win,
				imp,
				clk;
	int64	   *win_us;
} AggRows;

static void
aggregate_rows(AdsBatch *b, AggRows *r)
{
	aggmap_hash *agg = aggmap_create(CurrentMemoryContext, 1024, NULL);
	aggmap_iterator it;
	AggEntry   *e;
	AggEntry  **rows;
	int			n = 0;

	r->n = 0;
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		AggKey		key;
		bool		found;

		if (m->status != ADS_MSG_ACCEPTED)
			continue;
		key.ad_id = m->ev.ad_id;
		key.window_us = ads_minute_start_us(m->ev.ts_us);
		e = aggmap_insert(agg, key, &found);
		if (!found)
		{
			e->campaign_id = m->ev.campaign_id;
			e->impressions = 0;
			e->clicks = 0;
		}
		if (m->ev.type == ADS_EV_CLICK)
			e->clicks++;
		else
			e->impressions++;
	}
	if (agg->members == 0)
		return;

	rows = palloc(sizeof(AggEntry *) * agg->members);
	aggmap_start_iterate(agg, &it);
	while ((e = aggmap_iterate(agg, &it)) != NULL)
		rows[n++] = e;
	qsort(rows, n, sizeof(AggEntry *), cmp_agg);

	ads_array_init(&r->ad, INT8OID, n);
	ads_array_init(&r->camp, INT8OID, n);
	ads_array_init(&r->win, TIMESTAMPTZOID, n);
	ads_array_init(&r->imp, INT8OID, n);
	ads_array_init(&r->clk, INT8OID, n);
	r->win_us = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
	{
		ads_array_add(&r->ad, Int64GetDatum(rows[i]->key.ad_id));
		ads_array_add(&r->camp, Int64GetDatum(rows[i]->campaign_id));
		ads_array_add_unix_us(&r->win, rows[i]->key.window_us);
		ads_array_add(&r->imp, Int64GetDatum(rows[i]->impressions));
		ads_array_add(&r->clk, Int64GetDatum(rows[i]->clicks));
		r->win_us[i] = rows[i]->key.window_us;
	}
	r->n = n;
}

/* Upserts the rows into the stripe, and queues them for the sinks if any. */
static void
aggregate_write(AdsBatch *b, AggRows *r, int16 stripe, bool publishing)
{
	Datum		args[7];

	if (r->n == 0)
		return;
	args[0] = ads_array_datum(&r->ad);
	args[1] = ads_array_datum(&r->camp);
	args[2] = ads_array_datum(&r->win);
	args[3] = ads_array_datum(&r->imp);
	args[4] = ads_array_datum(&r->clk);
	args[5] = Int32GetDatum(b->source_id);
	args[6] = Int16GetDatum(stripe);
	exec_plan(P_AGG, args, NULL, false, SPI_OK_INSERT);

	/* Every row changed here is a change Pinot must see, while sinks exist. */
	if (publishing)
	{
		Datum		oargs[2] = {args[0], args[2]};

		exec_plan(P_OUTBOX, oargs, NULL, false, SPI_OK_INSERT);
	}
}

/*
 * Queue the distinct minutes for the rollups, in order, so that concurrent
 * workers take the queue's index entries in the same order.
 */
static void
queue_rollups(AdsBatch *b, AggRows *r)
{
	AdsArray	minutes;
	Datum		args[3];

	if (r->n == 0)
		return;
	qsort(r->win_us, r->n, sizeof(int64), cmp_int64);
	ads_array_init(&minutes, TIMESTAMPTZOID, r->n);
	for (int i = 0; i < r->n; i++)
		if (i == 0 || r->win_us[i - 1] != r->win_us[i])
			ads_array_add_unix_us(&minutes, r->win_us[i]);
	args[0] = ads_array_datum(&minutes);
	args[1] = Int32GetDatum(b->source_id);
	args[2] = Int16GetDatum(b->stripe);	/* the worker's index */
	exec_plan(P_PENDING, args, NULL, false, SPI_OK_INSERT);
}

/* Whether sinks exist: then every change also goes to the outbox. */
static bool
publishing(void)
{
	bool		isnull;

	exec_plan(P_PUBLISHING, NULL, NULL, false, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
dead_letters(AdsBatch *b, int64 expired_before_us)
{
	int			n = 0;
	AdsArray	part,
				off,
				reason,
				detail,
				payload,
				size;
	Datum		args[8];

	for (int i = 0; i < b->nmsgs; i++)
		if (b->msgs[i].status == ADS_MSG_REJECTED)
			n++;
	if (n == 0)
		return;

	ads_array_init(&part, INT4OID, n);
	ads_array_init(&off, INT8OID, n);
	ads_array_init(&reason, TEXTOID, n);
	ads_array_init(&detail, TEXTOID, n);
	ads_array_init(&payload, BYTEAOID, n);
	ads_array_init(&size, INT4OID, n);
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		size_t		keep;
		bytea	   *kept;

		if (m->status != ADS_MSG_REJECTED)
			continue;
		keep = Min(m->rkm->len, (size_t) adstream_dead_letter_payload_bytes);
		kept = palloc(VARHDRSZ + keep);
		SET_VARSIZE(kept, VARHDRSZ + keep);
		if (keep > 0)
			memcpy(VARDATA(kept), m->rkm->payload, keep);
		ads_array_add(&part, Int32GetDatum(m->rkm->partition));
		ads_array_add(&off, Int64GetDatum(m->rkm->offset));
		ads_array_add(&reason, CStringGetTextDatum(ads_reason_name(m->reason)));
		ads_array_add(&detail, CStringGetTextDatum(reject_detail(b, m, expired_before_us)));
		ads_array_add(&payload, PointerGetDatum(kept));
		ads_array_add(&size, Int32GetDatum((int32) Min(m->rkm->len, (size_t) PG_INT32_MAX)));
	}
	args[0] = CStringGetTextDatum(b->source_name);
	args[1] = CStringGetTextDatum(b->topic);
	args[2] = ads_array_datum(&part);
	args[3] = ads_array_datum(&off);
	args[4] = ads_array_datum(&reason);
	args[5] = ads_array_datum(&detail);
	args[6] = ads_array_datum(&payload);
	args[7] = ads_array_datum(&size);
	exec_plan(P_REJECT, args, NULL, false, SPI_OK_INSERT);
}

static void
advance_offsets(AdsBatch *b)
{
	AdsArray	part,
				expected,
				next,
				maxts,
				acc,
				dup,
				rej;
	Datum		args[9];
	bool		isnull;
	int64		updated;

	ads_array_init(&part, INT4OID, b->nparts);
	ads_array_init(&expected, INT8OID, b->nparts);
	ads_array_init(&next, INT8OID, b->nparts);
	ads_array_init(&maxts, TIMESTAMPTZOID, b->nparts);
	ads_array_init(&acc, INT8OID, b->nparts);
	ads_array_init(&dup, INT8OID, b->nparts);
	ads_array_init(&rej, INT8OID, b->nparts);
	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];

		if (!p->in_batch)
			continue;
		ads_array_add(&part, Int32GetDatum(p->partition));
		ads_array_add(&expected, Int64GetDatum(p->committed));
		ads_array_add(&next, Int64GetDatum(p->b_next));
		if (p->b_max_ts_us == PG_INT64_MIN)
			ads_array_add_null(&maxts);
		else
			ads_array_add_unix_us(&maxts, p->b_max_ts_us);
		ads_array_add(&acc, Int64GetDatum(p->b_accepted));
		ads_array_add(&dup, Int64GetDatum(p->b_duplicates));
		ads_array_add(&rej, Int64GetDatum(p->b_rejected));
	}
	args[0] = CStringGetTextDatum(b->source_name);
	args[1] = CStringGetTextDatum(b->topic);
	args[2] = ads_array_datum(&part);
	args[3] = ads_array_datum(&expected);
	args[4] = ads_array_datum(&next);
	args[5] = ads_array_datum(&maxts);
	args[6] = ads_array_datum(&acc);
	args[7] = ads_array_datum(&dup);
	args[8] = ads_array_datum(&rej);
	exec_plan(P_OFFSETS, args, NULL, false, SPI_OK_SELECT);

	updated = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (updated != part.n)
	{
		b->fenced = true;
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("offsets of source \"%s\" moved under this worker", b->source_name),
				 errdetail("%d of %d partitions had a stored offset other than the one this worker committed last.",
						   part.n - (int) updated, part.n),
				 errhint("Another worker consumed the same partitions; this worker will re-read its offsets.")));
	}
}

/*
 * A re-drive batch: take its dead letters away (all of them, or someone
 * else re-drove them first), so that dead_letters() writes back only those
 * still rejected, with their new reason.
 */
static void
redrive_take(AdsBatch *b)
{
	AdsArray	part,
				off;
	Datum		args[4];
	bool		isnull;
	int64		taken;

	ads_array_init(&part, INT4OID, b->nmsgs);
	ads_array_init(&off, INT8OID, b->nmsgs);
	for (int i = 0; i < b->nmsgs; i++)
	{
		ads_array_add(&part, Int32GetDatum(b->msgs[i].rkm->partition));
		ads_array_add(&off, Int64GetDatum(b->msgs[i].rkm->offset));
	}
	args[0] = CStringGetTextDatum(b->source_name);
	args[1] = CStringGetTextDatum(b->topic);
	args[2] = ads_array_datum(&part);
	args[3] = ads_array_datum(&off);
	exec_plan(P_REDRIVE_TAKE, args, NULL, false, SPI_OK_SELECT);
	taken = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (taken != b->nmsgs)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("dead letters of source \"%s\" changed while being re-driven", b->source_name),
				 errdetail("%lld of %d were still waiting to be re-driven.", (long long) taken, b->nmsgs),
				 errhint("The worker reads the waiting dead letters again.")));
}

/* A re-drive batch's counters: moved from rejected to accepted or duplicates. */
static void
redrive_counts(AdsBatch *b)
{
	AdsArray	part,
				acc,
				dup,
				maxts;
	Datum		args[6];

	ads_array_init(&part, INT4OID, b->nparts);
	ads_array_init(&acc, INT8OID, b->nparts);
	ads_array_init(&dup, INT8OID, b->nparts);
	ads_array_init(&maxts, TIMESTAMPTZOID, b->nparts);
	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];

		if (!p->in_batch)
			continue;
		ads_array_add(&part, Int32GetDatum(p->partition));
		ads_array_add(&acc, Int64GetDatum(p->b_accepted));
		ads_array_add(&dup, Int64GetDatum(p->b_duplicates));
		if (p->b_max_ts_us == PG_INT64_MIN)
			ads_array_add_null(&maxts);
		else
			ads_array_add_unix_us(&maxts, p->b_max_ts_us);
	}
	args[0] = CStringGetTextDatum(b->source_name);
	args[1] = CStringGetTextDatum(b->topic);
	args[2] = ads_array_datum(&part);
	args[3] = ads_array_datum(&acc);
	args[4] = ads_array_datum(&dup);
	args[5] = ads_array_datum(&maxts);
	exec_plan(P_REDRIVE_COUNTS, args, NULL, false, SPI_OK_UPDATE);
}

/*
 * A rewind's replayed messages are counted in its row, not in the
 * partition's counters (those count each message once, when first read).
 */
static void
replay_accounting(AdsBatch *b)
{
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		AdsPartition *p = &b->parts[m->part];

		if (!m->replay)
			continue;
		p->b_rw_replayed++;
		switch (m->status)
		{
			case ADS_MSG_ACCEPTED:
				p->b_accepted--;
				p->b_rw_accepted++;
				break;
			case ADS_MSG_DUPLICATE:
				p->b_duplicates--;
				p->b_rw_duplicates++;
				break;
			case ADS_MSG_REJECTED:
				p->b_rejected--;
				p->b_rw_rejected++;
				break;
			case ADS_MSG_SKIPPED:
				p->b_rw_skipped++;
				break;
			default:
				elog(ERROR, "adstream: a replayed message was left unjudged");
		}
	}
}

/*
 * The rewinds' rows move with the offsets: counters, and finished once the
 * partition's position has passed to_offset.  Every row this worker
 * replays must still be there, unfinished, or the batch fails and the
 * worker re-reads its offsets and rewinds.
 */
static void
advance_rewinds(AdsBatch *b)
{
	AdsArray	id,
				part,
				next,
				replayed,
				acc,
				dup,
				rej,
				skip;
	Datum		args[8];
	bool		isnull;
	int64		updated;
	Datum		done;

	ads_array_init(&id, INT8OID, b->nparts);
	ads_array_init(&part, INT4OID, b->nparts);
	ads_array_init(&next, INT8OID, b->nparts);
	ads_array_init(&replayed, INT8OID, b->nparts);
	ads_array_init(&acc, INT8OID, b->nparts);
	ads_array_init(&dup, INT8OID, b->nparts);
	ads_array_init(&rej, INT8OID, b->nparts);
	ads_array_init(&skip, INT8OID, b->nparts);
	for (int i = 0; i < b->nparts; i++)
	{
		AdsPartition *p = &b->parts[i];

		if (!p->in_batch || p->rw_id == 0)
			continue;
		ads_array_add(&id, Int64GetDatum(p->rw_id));
		ads_array_add(&part, Int32GetDatum(p->partition));
		ads_array_add(&next, Int64GetDatum(p->b_next));
		ads_array_add(&replayed, Int64GetDatum(p->b_rw_replayed));
		ads_array_add(&acc, Int64GetDatum(p->b_rw_accepted));
		ads_array_add(&dup, Int64GetDatum(p->b_rw_duplicates));
		ads_array_add(&rej, Int64GetDatum(p->b_rw_rejected));
		ads_array_add(&skip, Int64GetDatum(p->b_rw_skipped));
	}
	if (id.n == 0)
		return;
	args[0] = ads_array_datum(&id);
	args[1] = ads_array_datum(&part);
	args[2] = ads_array_datum(&next);
	args[3] = ads_array_datum(&replayed);
	args[4] = ads_array_datum(&acc);
	args[5] = ads_array_datum(&dup);
	args[6] = ads_array_datum(&rej);
	args[7] = ads_array_datum(&skip);
	exec_plan(P_REWINDS, args, NULL, false, SPI_OK_SELECT);
	updated = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	done = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (updated != id.n)
	{
		b->fenced = true;
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("a rewind of source \"%s\" changed under this worker", b->source_name),
				 errdetail("%d of %d partitions being replayed have no unfinished rewind any more.",
						   id.n - (int) updated, id.n),
				 errhint("The worker re-reads its offsets and rewinds.")));
	}
	/* A rewind whose partitions are all finished needs its id set no more. */
	if (!isnull)
	{
		int			rc = SPI_execute_with_args("DELETE FROM adstream.rewind_ids i WHERE i.rewind_id = ANY ($1) "
											   "AND NOT EXISTS (SELECT 1 FROM adstream.rewind_partitions r "
											   "WHERE r.rewind_id = i.rewind_id AND r.finished_at IS NULL)",
											   1, (Oid[]) {INT8ARRAYOID}, &done, NULL, false, 0);

		if (rc != SPI_OK_DELETE)
			elog(ERROR, "adstream: could not clear a finished rewind's ids: %s", SPI_result_code_string(rc));
	}
}

/* ---- events set aside ---- */

/*
 * Events set aside on this worker's partitions are taken (deleted, in this
 * transaction) and appended to the batch, after its Kafka messages, to be
 * judged with them: a duplicate if the claim that held their id committed,
 * new if it did not, set aside again if it is still running.  Their offsets
 * lie below the stored ones, which they do not move.
 */
static void
take_set_aside(AdsBatch *b)
{
	Datum	   *parts;
	int			nparts = 0;
	Datum		args[3];
	int			room = b->aside_room;

	b->nmsgs -= b->ntaken;		/* a retried write takes them again */
	b->ntaken = 0;
	MemoryContextReset(b->aside_ctx);
	b->aside_due_after = false;
	if (b->redrive || b->is_orders || !b->aside_due)
		return;
	if (b->nparts == 0)
	{
		/* Not a look: its partitions are not known yet (no metadata). */
		b->aside_due_after = true;
		return;
	}
	/* (a partition with no stored offset has nothing set aside) */
	parts = palloc(sizeof(Datum) * b->nparts);
	for (int i = 0; i < b->nparts; i++)
		if (b->parts[i].committed >= 0)
			parts[nparts++] = Int32GetDatum(b->parts[i].partition);
	if (nparts == 0)
		return;
	args[0] = Int32GetDatum(b->source_id);
	args[1] = PointerGetDatum(construct_array(parts, nparts, INT4OID, sizeof(int32), true, TYPALIGN_INT));
	args[2] = Int32GetDatum(room);
	exec_plan(P_ASIDE_TAKE, args, NULL, false, SPI_OK_DELETE_RETURNING);
	/* A full take may have left more. */
	b->aside_due_after = (SPI_processed >= (uint64) room);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		partition = DatumGetInt32(SPI_getbinval(tup, td, 1, &isnull));
		bytea	   *payload = DatumGetByteaPP(SPI_getbinval(tup, td, 10, &isnull));
		rd_kafka_message_t *rkm;
		AdsMsg	   *m;
		int			idx = -1;

		for (int i = 0; i < b->nparts; i++)
			if (b->parts[i].partition == partition)
				idx = i;
		if (idx < 0)
			elog(ERROR, "adstream: an event set aside on partition %d, not this worker's, was taken", partition);
		rkm = MemoryContextAllocZero(b->aside_ctx, sizeof(rd_kafka_message_t));
		rkm->partition = partition;
		rkm->offset = DatumGetInt64(SPI_getbinval(tup, td, 2, &isnull));
		rkm->len = VARSIZE_ANY_EXHDR(payload);
		rkm->payload = MemoryContextAlloc(b->aside_ctx, Max(rkm->len, 1));
		memcpy(rkm->payload, VARDATA_ANY(payload), rkm->len);

		m = &b->msgs[b->nmsgs++];
		memset(m, 0, sizeof(AdsMsg));
		m->rkm = rkm;
		m->part = idx;
		m->parse_reason = ADS_OK;
		m->taken_up = true;
		memcpy(m->ev.event_id, DatumGetUUIDP(SPI_getbinval(tup, td, 3, &isnull))->data, 16);
		m->ev.type = strcmp(TextDatumGetCString(SPI_getbinval(tup, td, 4, &isnull)), "click") == 0
			? ADS_EV_CLICK : ADS_EV_IMPRESSION;
		m->ev.ad_id = DatumGetInt64(SPI_getbinval(tup, td, 5, &isnull));
		m->ev.campaign_id = DatumGetInt64(SPI_getbinval(tup, td, 6, &isnull));
		m->ev.user_id = DatumGetInt64(SPI_getbinval(tup, td, 7, &isnull));
		m->ev.store_id = DatumGetInt64(SPI_getbinval(tup, td, 8, &isnull));
		m->ev.ts_us = ads_timestamptz_to_unix_us(DatumGetTimestampTz(SPI_getbinval(tup, td, 9, &isnull)));
		b->ntaken++;
	}
}

/*
 * Whether this batch may set aside the events whose ids running batches
 * hold, rather than wait for those: not a re-drive (its dead letters are
 * judged once per round), nor one whose rewind replay depends on one (its
 * counters are the rewind's; dedup_events() noted it).
 */
static bool
may_set_aside(const AdsBatch *b)
{
	return !b->redrive && !b->replay_held;
}

/*
 * The events whose ids the running batches hold: counted neither as
 * accepted nor as duplicates, written to adstream.set_aside in this
 * transaction.  Everything else of the batch stands as judged.
 */
static void
put_set_aside(AdsBatch *b, const TransactionId *running, int nrunning)
{
	AdsArray	part,
				off,
				ids,
				types,
				ad,
				camp,
				user,
				store,
				ts,
				payload;
	Datum		args[11];

	ads_array_init(&part, INT4OID, b->nmsgs);
	ads_array_init(&off, INT8OID, b->nmsgs);
	ads_array_init(&ids, UUIDOID, b->nmsgs);
	ads_array_init(&types, TEXTOID, b->nmsgs);
	ads_array_init(&ad, INT8OID, b->nmsgs);
	ads_array_init(&camp, INT8OID, b->nmsgs);
	ads_array_init(&user, INT8OID, b->nmsgs);
	ads_array_init(&store, INT8OID, b->nmsgs);
	ads_array_init(&ts, TIMESTAMPTZOID, b->nmsgs);
	ads_array_init(&payload, BYTEAOID, b->nmsgs);
	for (int i = 0; i < b->nmsgs; i++)
	{
		AdsMsg	   *m = &b->msgs[i];
		bool		held = false;
		bytea	   *value;

		if (m->status != ADS_MSG_DUPLICATE || !TransactionIdIsValid(m->held_by))
			continue;
		for (int j = 0; j < nrunning && !held; j++)
			held = (running[j] == m->held_by);
		if (!held)
			continue;
		m->status = ADS_MSG_SET_ASIDE;
		b->parts[m->part].b_duplicates--;
		value = palloc(VARHDRSZ + m->rkm->len);
		SET_VARSIZE(value, VARHDRSZ + m->rkm->len);
		memcpy(VARDATA(value), m->rkm->payload, m->rkm->len);
		ads_array_add(&part, Int32GetDatum(m->rkm->partition));
		ads_array_add(&off, Int64GetDatum(m->rkm->offset));
		ads_array_add(&ids, PointerGetDatum(m->ev.event_id));
		ads_array_add(&types, CStringGetTextDatum(m->ev.type == ADS_EV_CLICK ? "click" : "impression"));
		ads_array_add(&ad, Int64GetDatum(m->ev.ad_id));
		ads_array_add(&camp, Int64GetDatum(m->ev.campaign_id));
		ads_array_add(&user, Int64GetDatum(m->ev.user_id));
		ads_array_add(&store, Int64GetDatum(m->ev.store_id));
		ads_array_add_unix_us(&ts, m->ev.ts_us);
		ads_array_add(&payload, PointerGetDatum(value));
	}
	if (part.n == 0)
		return;
	args[0] = Int32GetDatum(b->source_id);
	args[1] = ads_array_datum(&part);
	args[2] = ads_array_datum(&off);
	args[3] = ads_array_datum(&ids);
	args[4] = ads_array_datum(&types);
	args[5] = ads_array_datum(&ad);
	args[6] = ads_array_datum(&camp);
	args[7] = ads_array_datum(&user);
	args[8] = ads_array_datum(&store);
	args[9] = ads_array_datum(&ts);
	args[10] = ads_array_datum(&payload);
	exec_plan(P_ASIDE_PUT, args, NULL, false, SPI_OK_INSERT);
	b->aside_due_after = true;
}

/* ---- the batch ---- */

void
ads_batch_init(AdsBatch *b, int32 source_id, const char *source_name,
			   const char *topic, bool is_orders)
{
	memset(b, 0, sizeof(AdsBatch));
	b->source_id = source_id;
	b->source_name = source_name;
	b->topic = topic;
	b->is_orders = is_orders;
	b->ctx = AllocSetContextCreate(TopMemoryContext, "adstream batch", ALLOCSET_DEFAULT_SIZES);
	b->ensured_ctx = AllocSetContextCreate(TopMemoryContext, "adstream ensured hours", ALLOCSET_SMALL_SIZES);
	b->ensured = hourset_create(b->ensured_ctx, 256, NULL);
	b->aside_ctx = AllocSetContextCreate(TopMemoryContext, "adstream events taken up", ALLOCSET_DEFAULT_SIZES);
	/* Events set aside before this worker started may be waiting for it. */
	b->aside_due = !is_orders;
	ads_batch_reset(b);
}

void
ads_batch_reset(AdsBatch *b)
{
	if (!b->redrive)
		for (int i = 0; i < b->nmsgs; i++)
			if (!b->msgs[i].taken_up)
				rd_kafka_message_destroy(b->msgs[i].rkm);
	b->redrive = false;
	b->nmsgs = 0;
	b->ntaken = 0;
	MemoryContextReset(b->ctx);
	MemoryContextReset(b->aside_ctx);
	b->msgs_cap = adstream_batch_max_messages;
	b->aside_room = b->is_orders ? 0 : b->msgs_cap / 2 + 16;
	b->msgs = MemoryContextAlloc(b->ctx, sizeof(AdsMsg) * (b->msgs_cap + b->aside_room));
}

/*
 * The batch's dead letters; for a re-drive, first the marked dead letters it
 * judged again are taken away (all must still be there).
 */
static void
record_rejects(AdsBatch *b, int64 expired_before_us)
{
	if (b->redrive)
		redrive_take(b);
	dead_letters(b, expired_before_us);
}

/*
 * The offsets move past the batch, and the rewinds being replayed with
 * them; a re-drive moves none, only the counters.
 */
static void
record_progress(AdsBatch *b)
{
	if (b->redrive)
		redrive_counts(b);
	else
	{
		replay_accounting(b);
		advance_offsets(b);
		advance_rewinds(b);
	}
}

void
ads_batch_write(AdsBatch *b)
{
	idset_hash *ids;
	int64		expired_before_us = PG_INT64_MIN;
	bool		attribution;
	Datum		arg;
	bool		isnull;
	Datum		d;

	ads_begin_tx("adstream: writing batch");

	/*
	 * Keeps expire_dedup_state() from forgetting what this batch judges
	 * against.  The source's row is read after the lock, in a new snapshot
	 * (read_only = false): one taken before it could miss an expiry that
	 * committed while this batch waited, and judge a forgotten hour's events
	 * as new.
	 */
	(void) ads_lock("adstream.dedup_expiry", 0, false, false, true);
	arg = Int32GetDatum(b->source_id);
	exec_plan(P_SOURCE_STATE, &arg, NULL, false, SPI_OK_SELECT);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("adstream source \"%s\" no longer exists", b->source_name),
				 errhint("The worker stops once the launcher notices.")));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull && !TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(d)))
		expired_before_us = ads_timestamptz_to_unix_us(DatumGetTimestampTz(d));
	attribution = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	b->minutes_dropped_before_us = (isnull || TIMESTAMP_NOT_FINITE(DatumGetTimestampTz(d))) ? PG_INT64_MIN :
		ads_timestamptz_to_unix_us(DatumGetTimestampTz(d));

	take_set_aside(b);
	if (b->nmsgs == 0)
	{
		/* Nothing was waiting after all (a worker's first look). */
		for (int i = 0; i < b->nparts; i++)
			b->parts[i].in_batch = false;
		ads_end_tx();
		return;
	}
	ids = classify(b, expired_before_us);
	if (b->is_orders)
	{
		dedup_orders(b, ids);
		record_rejects(b, expired_before_us);
		record_progress(b);
	}
	else
	{
		AggRows		rows;
		bool		sinks;
		TransactionId *running;
		int			nrunning;

		ads_dedup_index_prepare();
		ensure_time_partitions(b);
		dedup_events(b);
		dedup_recount(b, ids);
		if (attribution)
			keep_for_attribution(b);
		aggregate_rows(b, &rows);
		sinks = publishing();

		/*
		 * The rows go to this worker's own stripe, which no other worker
		 * writes, and with sinks to the outbox (insert only): they make no
		 * one wait.  Published versions are drawn as records are read
		 * (docs/pinot.md, rule 2), so they need no shared row to order them.
		 */
		aggregate_write(b, &rows, b->stripe, sinks);
		record_rejects(b, expired_before_us);

		/*
		 * Duplicates of other batches' in-progress claims stand only if
		 * those commit; the events whose ids running ones hold wait in
		 * set_aside (after aggregate_rows: they were duplicates there).
		 */
		nrunning = ads_dedup_confirm(may_set_aside(b), &running);
		if (nrunning > 0)
			put_set_aside(b, running, nrunning);

		/*
		 * The offsets after the aggregates, as drop_source(forget_counts)
		 * expects (it locks ad_stats_minute, then deletes the offsets).
		 */
		record_progress(b);
		queue_rollups(b, &rows);
	}

	ads_end_tx();
}

void
ads_batch_settle(AdsBatch *b, bool committed)
{
	ads_dedup_settle(committed);
	if (committed && !b->redrive)
		b->aside_due = b->aside_due_after;
	/* A rolled-back batch may have been the one that created them. */
	if (!committed)
		hourset_reset(b->ensured);
	else if (!b->redrive)
		/* A rewind whose row this batch finished is over for this worker. */
		for (int i = 0; i < b->nparts; i++)
			if (b->parts[i].in_batch && b->parts[i].rw_id != 0 && b->parts[i].b_next >= b->parts[i].rw_to)
				b->parts[i].rw_id = 0;
}
