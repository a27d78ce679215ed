/*
 * batch.c
 *     The one transaction per batch that makes adstream exactly-once.
 *
 * In a single transaction a batch:
 *   1. takes a shared lock that keeps dedup partitions and index entries
 *      from being expired under it, and reads the source's event-time
 *      watermark;
 *   2. classifies every message: dead letter (parser reason, future_timestamp,
 *      too_late), duplicate within the batch, or candidate;
 *   3. makes sure the time partitions it is about to write exist;
 *   4. claims the candidates' event ids in the shared dedup index
 *      (src/dedup_index.c): those claimed are new, the rest were seen
 *      before (duplicates); the claimed ids are appended to dedup_log, which
 *      makes the claim durable (orders are deduplicated by their table);
 *   5. upserts one row per (ad, minute) touched, pre-aggregated here;
 *   6. writes dead letters;
 *   7. advances adstream.offsets, but only from the offsets this worker
 *      last committed (a fence against a second worker on the partition).
 * If anything fails the transaction rolls back as a whole and the caller
 * retries the same messages, so a batch counts exactly once or not at all.
 *
 * Rows are sent in sorted order (event ids, then (ad, minute)) so that
 * concurrent workers lock index entries in the same order and do not
 * deadlock each other.
 *
 * After the transaction ends, ads_batch_settle() tells the dedup index
 * whether the claims stand.
 */
#include "adstream.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "consumer.h"
#include "dedup_index.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define PAYLOAD_KEEP_BYTES 8192
#define USECS_PER_MINUTE_I64 INT64CONST(60000000)

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
#define USECS_PER_HOUR_I64 INT64CONST(3600000000)

/* ---- prepared statements, kept for the life of the worker ---- */
enum
{
	P_WATERMARK,
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
	P__COUNT
};

static SPIPlanPtr plans[P__COUNT];

static const char *const plan_sql[P__COUNT] = {
	/* The watermark, and whether clicks must be kept: only while an orders source exists. */
	[P_WATERMARK] =
	"SELECT adstream.source_watermark($1), EXISTS (SELECT 1 FROM adstream.sources WHERE kind = 'orders')",
	[P_ENSURE] =
	"SELECT adstream.ensure_partitions('ad_stats_minute', $1), "
	"adstream.ensure_partitions('dedup_log', $1), adstream.ensure_partitions('ad_events', $1)",
	[P_DEDUP_LOG] =
	"INSERT INTO adstream.dedup_log (source_id, hour, ids) SELECT $1, * FROM unnest($2::timestamptz[], $3::bytea[])",
	[P_ORDERS] =
	"INSERT INTO adstream.orders AS o (order_id, source, user_id, store_id, amount, currency, ts) "
	"SELECT u.order_id, $1, u.user_id, u.store_id, u.amount::numeric, u.currency, u.ts "
	"FROM unnest($2::uuid[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::timestamptz[]) "
	"AS u(order_id, user_id, store_id, amount, currency, ts) "
	"ON CONFLICT (order_id) DO NOTHING RETURNING o.order_id",
	[P_AD_EVENTS] =
	"INSERT INTO adstream.ad_events (source_id, event_id, type, ad_id, campaign_id, user_id, store_id, ts) "
	"SELECT $1, u.* FROM unnest($2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], "
	"$8::timestamptz[]) AS u",
	[P_AGG] =
	"INSERT INTO adstream.ad_stats_minute AS s (ad_id, campaign_id, window_start, impressions, clicks) "
	"SELECT * FROM unnest($1::int8[], $2::int8[], $3::timestamptz[], $4::int8[], $5::int8[]) "
	"ON CONFLICT (ad_id, window_start) DO UPDATE SET "
	"impressions = s.impressions + excluded.impressions, "
	"clicks = s.clicks + excluded.clicks, updated_at = now()",
	/* The (few, sorted) minutes touched, queued for the rollups. */
	[P_PENDING] =
	"INSERT INTO adstream.rollup_pending (window_start) SELECT unnest($1::timestamptz[]) "
	"ON CONFLICT DO NOTHING",
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
	"  FROM b WHERE b.expected < 0 ON CONFLICT DO NOTHING RETURNING 1) "
	"SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ins)",
};

static const Oid plan_args[P__COUNT][9] = {
	[P_WATERMARK] = {TEXTOID},
	[P_ENSURE] = {TIMESTAMPTZARRAYOID},
	[P_DEDUP_LOG] = {INT4OID, TIMESTAMPTZARRAYOID, BYTEAARRAYOID},
	[P_ORDERS] = {TEXTOID, UUIDARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID},
	[P_AD_EVENTS] = {INT4OID, UUIDARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID},
	[P_AGG] = {INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID},
	[P_PENDING] = {TIMESTAMPTZARRAYOID},
	[P_OUTBOX] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID},
	[P_REJECT] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, BYTEAARRAYOID, INT4ARRAYOID},
	[P_OFFSETS] = {TEXTOID, TEXTOID, INT4ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID},
};
static const int plan_nargs[P__COUNT] = {
	[P_WATERMARK] = 1,[P_ENSURE] = 1,[P_DEDUP_LOG] = 3,[P_ORDERS] = 7,[P_AD_EVENTS] = 8,
	[P_AGG] = 5,[P_PENDING] = 1,[P_PUBLISHING] = 0,[P_OUTBOX] = 2,[P_REJECT] = 8,[P_OFFSETS] = 9,
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

/* ---- array building ---- */

static Datum
int8_array(int64 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static Datum
tstz_array(int64 *unix_us, bool *isnull, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
		d[i] = TimestampTzGetDatum(ads_unix_us_to_timestamptz(unix_us[i]));
	return PointerGetDatum(construct_md_array(d, isnull, 1, dims, lbs, TIMESTAMPTZOID,
											  8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static Datum
int4_array(int32 *v, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int32GetDatum(v[i]);
	return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
}

static Datum
varlena_array(Datum *d, int n, Oid elmtype)
{
	return PointerGetDatum(construct_array(d, n, elmtype, -1, false, TYPALIGN_INT));
}

/* ---- classification ---- */

/* The id that deduplicates a message, and its event time. */
static inline const uint8 *
msg_id(const AdsConsumer *c, const AdsMsg *m)
{
	return c->is_orders ? m->order.order_id : m->ev.event_id;
}

static inline int64
msg_ts(const AdsConsumer *c, const AdsMsg *m)
{
	return c->is_orders ? m->order.ts_us : m->ev.ts_us;
}

static int
cmp_msg_id(const void *a, const void *b, void *arg)
{
	const AdsConsumer *c = (const AdsConsumer *) arg;

	return memcmp(msg_id(c, &c->msgs[*(const int *) a]), msg_id(c, &c->msgs[*(const int *) b]), 16);
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
 * Decide each message's fate that does not need the dedup state.  The
 * watermark advances message by message, as if events were judged one at a
 * time, so the result does not depend on where batch boundaries fall.
 */
static idset_hash *
classify(AdsConsumer *c, int64 wm_us)
{
	int64		now_us = ads_timestamptz_to_unix_us(GetCurrentTimestamp());
	int64		future_limit = now_us + (int64) adstream_max_future_skew_s * USECS_PER_SEC;
	int64		horizon = (int64) adstream_dedup_horizon_s * USECS_PER_SEC;
	/* Minutes older than this are dropped: counting into them would be lost. */
	int64		retained_from = now_us - (int64) adstream_minute_retention_s * USECS_PER_SEC;
	idset_hash *ids = idset_create(CurrentMemoryContext, c->nmsgs, NULL);

	for (int i = 0; i < c->nparts; i++)
	{
		AdsPart    *p = &c->parts[i];

		p->in_batch = false;
		p->b_accepted = p->b_duplicates = p->b_rejected = 0;
		p->b_max_ts_us = PG_INT64_MIN;
	}

	for (int i = 0; i < c->nmsgs; i++)
	{
		AdsMsg	   *m = &c->msgs[i];
		AdsPart    *p = &c->parts[m->part];
		IdEntry    *e;
		bool		found;
		IdKey		key;
		int64		ts = 0;

		p->in_batch = true;
		p->b_next = m->rkm->offset + 1;
		m->reason = m->parse_reason;
		if (m->reason == ADS_OK)
		{
			ts = msg_ts(c, m);
			if (ts > future_limit)
				m->reason = ADS_R_FUTURE_TIMESTAMP;
			/* Orders are deduplicated forever by their table's key: never too late. */
			else if (!c->is_orders &&
					 ((wm_us != PG_INT64_MIN && ts < wm_us - horizon) || ts < retained_from))
				m->reason = ADS_R_TOO_LATE;
		}
		if (m->reason != ADS_OK)
		{
			m->status = MSG_REJECTED;
			p->b_rejected++;
			continue;
		}
		wm_us = Max(wm_us, ts);
		p->b_max_ts_us = Max(p->b_max_ts_us, ts);

		memcpy(key.bytes, msg_id(c, m), 16);
		e = idset_insert(ids, key, &found);
		if (found)
		{
			m->status = MSG_DUPLICATE;
			p->b_duplicates++;
		}
		else
		{
			e->msg = i;
			m->status = MSG_CANDIDATE;
		}
	}
	return ids;
}

static const char *
reject_detail(AdsConsumer *c, AdsMsg *m, int64 wm_us)
{
	int64		now_us;

	switch (m->reason)
	{
		case ADS_R_FUTURE_TIMESTAMP:
			now_us = ads_timestamptz_to_unix_us(GetCurrentTimestamp());
			return psprintf("ts is %lld s ahead of the server clock; adstream.max_future_skew is %d s",
							(long long) ((msg_ts(c, m) - now_us) / USECS_PER_SEC),
							adstream_max_future_skew_s);
		case ADS_R_TOO_LATE:
			if (msg_ts(c, m) < ads_timestamptz_to_unix_us(GetCurrentTimestamp()) -
				(int64) adstream_minute_retention_s * USECS_PER_SEC)
				return psprintf("ts is older than adstream.minute_retention (%d s)",
								adstream_minute_retention_s);
			return psprintf("ts is more than adstream.dedup_horizon (%d s) behind the source watermark",
							adstream_dedup_horizon_s);
		default:
			return m->detail;
	}
}

/* ---- the statements ---- */

static void
ensure_partitions(AdsConsumer *c)
{
	int64	   *hours = palloc(sizeof(int64) * Max(c->nmsgs, 1));
	int			n = 0;
	Datum		arg;
	hourset_hash *seen = hourset_create(CurrentMemoryContext, 64, NULL);

	for (int i = 0; i < c->nmsgs; i++)
	{
		AdsMsg	   *m = &c->msgs[i];
		int64		hour;
		bool		found;

		if (m->status != MSG_CANDIDATE)
			continue;
		hour = m->ev.ts_us - m->ev.ts_us % USECS_PER_HOUR_I64;
		if (hourset_lookup(c->ensured, hour))
			continue;
		hourset_insert(seen, hour, &found);
		if (!found)
			hours[n++] = hour;
	}
	if (n == 0)
		return;

	arg = tstz_array(hours, NULL, n);
	exec_plan(P_ENSURE, &arg, NULL, false, SPI_OK_SELECT);

	/* Dropped on any error by ads_batch_forget_partitions(). */
	if (c->ensured->members + n > MAX_ENSURED_HOURS)
		hourset_reset(c->ensured);
	for (int i = 0; i < n; i++)
	{
		bool		found;

		hourset_insert(c->ensured, hours[i], &found);
	}
}

/* Sorted indexes of the candidate messages, by id; returns how many. */
static int
sorted_candidates(AdsConsumer *c, int **idx_out)
{
	int		   *idx = palloc(sizeof(int) * Max(c->nmsgs, 1));
	int			n = 0;

	for (int i = 0; i < c->nmsgs; i++)
		if (c->msgs[i].status == MSG_CANDIDATE)
			idx[n++] = i;
	qsort_arg(idx, n, sizeof(int), cmp_msg_id, c);
	*idx_out = idx;
	return n;
}

/* Count each candidate as accepted (new) or duplicate. */
static void
count_candidates(AdsConsumer *c, const int *idx, int n)
{
	for (int i = 0; i < n; i++)
	{
		AdsMsg	   *m = &c->msgs[idx[i]];

		if (m->status == MSG_ACCEPTED)
			c->parts[m->part].b_accepted++;
		else
		{
			m->status = MSG_DUPLICATE;
			c->parts[m->part].b_duplicates++;
		}
	}
}

static inline int32
event_hour(int64 ts_us)
{
	return (int32) ((ts_us - (ts_us % USECS_PER_HOUR_I64 + USECS_PER_HOUR_I64) % USECS_PER_HOUR_I64) /
					USECS_PER_HOUR_I64);
}

/*
 * Orders are remembered by the orders table itself: those inserted are new,
 * the other candidates were seen before.
 */
static void
dedup_orders(AdsConsumer *c, idset_hash *ids)
{
	int		   *idx;
	int			n = sorted_candidates(c, &idx);
	Datum	   *uuids;
	int64	   *ts,
			   *user,
			   *store;
	Datum	   *amount,
			   *currency;
	Datum		args[7];

	if (n == 0)
		return;
	uuids = palloc(sizeof(Datum) * n);
	ts = palloc(sizeof(int64) * n);
	user = palloc(sizeof(int64) * n);
	store = palloc(sizeof(int64) * n);
	amount = palloc(sizeof(Datum) * n);
	currency = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		AdsOrder   *o = &c->msgs[idx[i]].order;

		uuids[i] = PointerGetDatum(o->order_id);
		ts[i] = o->ts_us;
		user[i] = o->user_id;
		store[i] = o->store_id;
		amount[i] = CStringGetTextDatum(o->amount);
		currency[i] = CStringGetTextDatum(o->currency);
	}
	args[0] = CStringGetTextDatum(c->name);
	args[1] = PointerGetDatum(construct_array(uuids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[2] = int8_array(user, n);
	args[3] = int8_array(store, n);
	args[4] = varlena_array(amount, n, TEXTOID);
	args[5] = varlena_array(currency, n, TEXTOID);
	args[6] = tstz_array(ts, NULL, n);
	exec_plan(P_ORDERS, args, NULL, false, SPI_OK_INSERT_RETURNING);

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
		c->msgs[e->msg].status = MSG_ACCEPTED;
	}
	count_candidates(c, idx, n);
}

/*
 * Ad events: claim the candidates' ids in the shared dedup index, and log
 * the claimed ones to dedup_log, one row of concatenated ids per hour of
 * event time, in this transaction.
 */
static void
dedup_events(AdsConsumer *c)
{
	int		   *idx;
	int			n = sorted_candidates(c, &idx);
	const uint8 **idp;
	int32	   *hours;
	bool	   *is_new;
	void	  **entries;
	int			nhours = 0;
	int64	   *row_hour;
	Datum	   *row_ids;
	Datum		args[3];

	if (n == 0)
		return;
	idp = palloc(sizeof(uint8 *) * n);
	hours = palloc(sizeof(int32) * n);
	is_new = palloc(sizeof(bool) * n);
	entries = palloc(sizeof(void *) * n);
	for (int i = 0; i < n; i++)
	{
		idp[i] = c->msgs[idx[i]].ev.event_id;
		hours[i] = event_hour(c->msgs[idx[i]].ev.ts_us);
	}

	c->claim_xid = GetTopTransactionId();
	ads_dedup_claim(c->args.source_id, n, idp, hours, is_new, entries);
	for (int i = 0; i < n; i++)
		if (is_new[i])
		{
			c->msgs[idx[i]].status = MSG_ACCEPTED;
			c->msgs[idx[i]].dedup_entry = entries[i];
		}
	count_candidates(c, idx, n);

	/* One dedup_log row per hour: the claimed ids of that hour, in id order. */
	row_hour = palloc(sizeof(int64) * n);
	row_ids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		int			h;
		int			count = 0;
		bytea	   *b;
		char	   *p;

		if (!is_new[i])
			continue;
		for (h = 0; h < nhours; h++)
			if (row_hour[h] == (int64) hours[i] * USECS_PER_HOUR_I64)
				break;
		if (h < nhours)
			continue;			/* this hour's row is built already */
		for (int j = i; j < n; j++)
			count += (is_new[j] && hours[j] == hours[i]);
		b = palloc(VARHDRSZ + 16 * count);
		SET_VARSIZE(b, VARHDRSZ + 16 * count);
		p = VARDATA(b);
		for (int j = i; j < n; j++)
			if (is_new[j] && hours[j] == hours[i])
			{
				memcpy(p, idp[j], 16);
				p += 16;
			}
		row_hour[nhours] = (int64) hours[i] * USECS_PER_HOUR_I64;
		row_ids[nhours] = PointerGetDatum(b);
		nhours++;
	}
	if (nhours == 0)
		return;
	args[0] = Int32GetDatum(c->args.source_id);
	args[1] = tstz_array(row_hour, NULL, nhours);
	args[2] = varlena_array(row_ids, nhours, BYTEAOID);
	exec_plan(P_DEDUP_LOG, args, NULL, false, SPI_OK_INSERT);
}

/*
 * The batch transaction has ended: its claims in the dedup index stand if
 * it committed and are withdrawn if not.  Never throws.
 */
void
ads_batch_settle(AdsConsumer *c, bool committed)
{
	const uint8 **idp;
	void	  **entries;
	int			n = 0;

	if (!TransactionIdIsValid(c->claim_xid))
		return;
	idp = palloc(sizeof(uint8 *) * Max(c->nmsgs, 1));
	entries = palloc(sizeof(void *) * Max(c->nmsgs, 1));
	for (int i = 0; i < c->nmsgs; i++)
		if (c->msgs[i].status == MSG_ACCEPTED)
		{
			idp[n] = c->msgs[i].ev.event_id;
			entries[n++] = c->msgs[i].dedup_entry;
		}
	ads_dedup_settle(c->args.source_id, n, idp, entries, c->claim_xid, committed);
	c->claim_xid = InvalidTransactionId;
	pfree(idp);
	pfree(entries);
}

/*
 * Keep the new clicks (and impressions, when view-through is on) for
 * attribution, in the same transaction as their counts.  Only while an
 * orders source exists: without one nothing would ever read them.
 */
static void
keep_for_attribution(AdsConsumer *c)
{
	bool		impressions = adstream_view_through_window_s > 0;
	int			n = 0;
	Datum	   *ids,
			   *types;
	int64	   *ad,
			   *camp,
			   *user,
			   *store,
			   *ts;
	Datum		args[8];

	for (int i = 0; i < c->nmsgs; i++)
		if (c->msgs[i].status == MSG_ACCEPTED &&
			(impressions || c->msgs[i].ev.type == ADS_EV_CLICK))
			n++;
	if (n == 0)
		return;

	ids = palloc(sizeof(Datum) * n);
	types = palloc(sizeof(Datum) * n);
	ad = palloc(sizeof(int64) * n);
	camp = palloc(sizeof(int64) * n);
	user = palloc(sizeof(int64) * n);
	store = palloc(sizeof(int64) * n);
	ts = palloc(sizeof(int64) * n);
	n = 0;
	for (int i = 0; i < c->nmsgs; i++)
	{
		AdsEvent   *ev = &c->msgs[i].ev;

		if (c->msgs[i].status != MSG_ACCEPTED || (!impressions && ev->type != ADS_EV_CLICK))
			continue;
		ids[n] = PointerGetDatum(ev->event_id);
		types[n] = CStringGetTextDatum(ev->type == ADS_EV_CLICK ? "click" : "impression");
		ad[n] = ev->ad_id;
		camp[n] = ev->campaign_id;
		user[n] = ev->user_id;
		store[n] = ev->store_id;
		ts[n] = ev->ts_us;
		n++;
	}
	args[0] = Int32GetDatum(c->args.source_id);
	args[1] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[2] = varlena_array(types, n, TEXTOID);
	args[3] = int8_array(ad, n);
	args[4] = int8_array(camp, n);
	args[5] = int8_array(user, n);
	args[6] = int8_array(store, n);
	args[7] = tstz_array(ts, NULL, n);
	exec_plan(P_AD_EVENTS, args, NULL, false, SPI_OK_INSERT);
}

static void
aggregate(AdsConsumer *c)
{
	aggmap_hash *agg = aggmap_create(CurrentMemoryContext, 1024, NULL);
	aggmap_iterator it;
	AggEntry   *e;
	AggEntry  **rows;
	int			n = 0;
	int64	   *ad,
			   *camp,
			   *win,
			   *imp,
			   *clk;
	int			nmin;
	bool		isnull;
	Datum		args[5];

	for (int i = 0; i < c->nmsgs; i++)
	{
		AdsMsg	   *m = &c->msgs[i];
		AggKey		key;
		bool		found;

		if (m->status != MSG_ACCEPTED)
			continue;
		key.ad_id = m->ev.ad_id;
		key.window_us = m->ev.ts_us - m->ev.ts_us % USECS_PER_MINUTE_I64;
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

	ad = palloc(sizeof(int64) * n);
	camp = palloc(sizeof(int64) * n);
	win = palloc(sizeof(int64) * n);
	imp = palloc(sizeof(int64) * n);
	clk = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
	{
		ad[i] = rows[i]->key.ad_id;
		camp[i] = rows[i]->campaign_id;
		win[i] = rows[i]->key.window_us;
		imp[i] = rows[i]->impressions;
		clk[i] = rows[i]->clicks;
	}
	args[0] = int8_array(ad, n);
	args[1] = int8_array(camp, n);
	args[2] = tstz_array(win, NULL, n);
	args[3] = int8_array(imp, n);
	args[4] = int8_array(clk, n);
	exec_plan(P_AGG, args, NULL, false, SPI_OK_INSERT);

	/* Every row changed here is a change Pinot must see, while sinks exist. */
	exec_plan(P_PUBLISHING, NULL, NULL, false, SPI_OK_SELECT);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
	{
		Datum		oargs[2] = {args[0], args[2]};

		exec_plan(P_OUTBOX, oargs, NULL, false, SPI_OK_INSERT);
	}

	/*
	 * Queue the distinct minutes for the rollups, in order, so that
	 * concurrent workers take the queue's index entries in the same order.
	 */
	qsort(win, n, sizeof(int64), cmp_int64);
	nmin = 0;
	for (int i = 0; i < n; i++)
		if (nmin == 0 || win[nmin - 1] != win[i])
			win[nmin++] = win[i];
	args[0] = tstz_array(win, NULL, nmin);
	exec_plan(P_PENDING, args, NULL, false, SPI_OK_INSERT);
}

static void
dead_letters(AdsConsumer *c, int64 wm_us)
{
	int			n = 0;
	int32	   *part,
			   *size;
	int64	   *off;
	Datum	   *reason,
			   *detail,
			   *payload;
	Datum		args[8];

	for (int i = 0; i < c->nmsgs; i++)
		if (c->msgs[i].status == MSG_REJECTED)
			n++;
	if (n == 0)
		return;

	part = palloc(sizeof(int32) * n);
	size = palloc(sizeof(int32) * n);
	off = palloc(sizeof(int64) * n);
	reason = palloc(sizeof(Datum) * n);
	detail = palloc(sizeof(Datum) * n);
	payload = palloc(sizeof(Datum) * n);
	n = 0;
	for (int i = 0; i < c->nmsgs; i++)
	{
		AdsMsg	   *m = &c->msgs[i];
		size_t		keep;
		bytea	   *b;

		if (m->status != MSG_REJECTED)
			continue;
		keep = Min(m->rkm->len, PAYLOAD_KEEP_BYTES);
		b = palloc(VARHDRSZ + keep);
		SET_VARSIZE(b, VARHDRSZ + keep);
		if (keep > 0)
			memcpy(VARDATA(b), m->rkm->payload, keep);
		part[n] = m->rkm->partition;
		off[n] = m->rkm->offset;
		size[n] = (int32) Min(m->rkm->len, (size_t) PG_INT32_MAX);
		reason[n] = CStringGetTextDatum(ads_reason_name(m->reason));
		detail[n] = CStringGetTextDatum(reject_detail(c, m, wm_us));
		payload[n] = PointerGetDatum(b);
		n++;
	}
	args[0] = CStringGetTextDatum(c->name);
	args[1] = CStringGetTextDatum(c->topic);
	args[2] = int4_array(part, n);
	args[3] = int8_array(off, n);
	args[4] = varlena_array(reason, n, TEXTOID);
	args[5] = varlena_array(detail, n, TEXTOID);
	args[6] = varlena_array(payload, n, BYTEAOID);
	args[7] = int4_array(size, n);
	exec_plan(P_REJECT, args, NULL, false, SPI_OK_INSERT);
}

static void
advance_offsets(AdsConsumer *c)
{
	int32	   *part = palloc(sizeof(int32) * c->nparts);
	int64	   *expected = palloc(sizeof(int64) * c->nparts);
	int64	   *next = palloc(sizeof(int64) * c->nparts);
	int64	   *maxts = palloc(sizeof(int64) * c->nparts);
	bool	   *maxts_null = palloc(sizeof(bool) * c->nparts);
	int64	   *acc = palloc(sizeof(int64) * c->nparts);
	int64	   *dup = palloc(sizeof(int64) * c->nparts);
	int64	   *rej = palloc(sizeof(int64) * c->nparts);
	int			n = 0;
	Datum		args[9];
	bool		isnull;
	int64		updated;

	for (int i = 0; i < c->nparts; i++)
	{
		AdsPart    *p = &c->parts[i];

		if (!p->in_batch)
			continue;
		part[n] = p->partition;
		expected[n] = p->committed;
		next[n] = p->b_next;
		maxts[n] = p->b_max_ts_us;
		maxts_null[n] = (p->b_max_ts_us == PG_INT64_MIN);
		acc[n] = p->b_accepted;
		dup[n] = p->b_duplicates;
		rej[n] = p->b_rejected;
		n++;
	}
	args[0] = CStringGetTextDatum(c->name);
	args[1] = CStringGetTextDatum(c->topic);
	args[2] = int4_array(part, n);
	args[3] = int8_array(expected, n);
	args[4] = int8_array(next, n);
	args[5] = tstz_array(maxts, maxts_null, n);
	args[6] = int8_array(acc, n);
	args[7] = int8_array(dup, n);
	args[8] = int8_array(rej, n);
	exec_plan(P_OFFSETS, args, NULL, false, SPI_OK_SELECT);

	updated = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (updated != n)
	{
		c->fenced = true;
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("offsets of source \"%s\" moved under this worker", c->name),
				 errdetail("%d of %d partitions had a stored offset other than the one this worker committed last.",
						   n - (int) updated, n),
				 errhint("Another worker consumed the same partitions; this worker will re-read its offsets.")));
	}
}

void
ads_batch_forget_partitions(AdsConsumer *c)
{
	hourset_reset(c->ensured);
}

/*
 * Write the current batch in one transaction.  Throws on failure, with the
 * transaction left for the caller to abort.
 */
void
ads_batch_write(AdsConsumer *c)
{
	idset_hash *ids;
	int64		wm_us = PG_INT64_MIN;
	bool		attribution;
	Datum		arg;
	bool		isnull;
	Datum		d;

	if (c->ensured == NULL)
		c->ensured = hourset_create(c->ensured_ctx, 256, NULL);

	ads_begin_tx("adstream: writing batch");

	/* Keeps expire_dedup_state() from dropping what this batch judges against. */
	(void) ads_lock("adstream.dedup_expiry", 0, false, false, true);
	arg = CStringGetTextDatum(c->name);
	exec_plan(P_WATERMARK, &arg, NULL, true, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		wm_us = ads_timestamptz_to_unix_us(DatumGetTimestampTz(d));

	c->claim_xid = InvalidTransactionId;
	attribution = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	ids = classify(c, wm_us);
	if (c->is_orders)
		dedup_orders(c, ids);
	else
	{
		ads_dedup_index_prepare();
		ensure_partitions(c);
		dedup_events(c);
		if (attribution)
			keep_for_attribution(c);
		aggregate(c);
	}
	dead_letters(c, wm_us);
	advance_offsets(c);

	ads_end_tx();
}

/*
 * Judge the orders that are ready, in a transaction of its own (a batch of
 * orders is committed before it may be judged).  Returns how many were
 * decided.
 */
int
ads_attribute_orders(void)
{
	bool		isnull;
	int			done;

	ads_begin_tx("adstream: attributing orders");

	if (SPI_execute("SELECT adstream.attribute_orders()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "adstream: attribute_orders failed");
	done = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	ads_end_tx();
	return done;
}
