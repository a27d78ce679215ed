/*
 * adstream.h
 *     Declarations shared by the launcher, the consumer workers and the SQL
 *     functions: GUCs, the shared-memory worker registry, and module entry
 *     points.  See docs/architecture.md for the data flow.
 */
#ifndef ADSTREAM_H
#define ADSTREAM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

/* ---- GUCs (adstream.c) ---- */
extern char *adstream_database;
extern char *adstream_node_name;
extern int	adstream_max_workers;
extern int	adstream_batch_max_messages;
extern int	adstream_batch_max_ms;
extern int	adstream_max_message_bytes;
extern int	adstream_max_future_skew_s;
extern int	adstream_dedup_horizon_s;
extern int	adstream_launcher_naptime_ms;
extern int	adstream_discovery_interval_s;
extern int	adstream_attribution_window_s;
extern int	adstream_view_through_window_s;
extern int	adstream_attribution_max_wait_s;
extern int	adstream_minute_retention_s;
extern int	adstream_rejected_retention_s;

/* ---- shared-memory registry of consumer workers ---- */

#define ADS_MAX_PARTS_PER_WORKER 256
#define ADS_ERROR_LEN 256
#define ADS_STATE_LEN 16

typedef struct AdsPartInfo
{
	int32		partition;
	int64		high_watermark;	/* broker's, from the last fetch; -1 unknown */
	int64		position;		/* next offset this worker will read */
} AdsPartInfo;

typedef struct AdsWorkerSlot
{
	slock_t		mutex;			/* protects everything below */
	bool		in_use;			/* allocated by the launcher */
	Oid			database;		/* source ids are only unique within it */
	bool		publisher;		/* publishes a sink; else consumes a source */
	int32		source_id;		/* or sink id, for a publisher */
	int32		worker_index;
	int32		nworkers;
	int64		generation;
	pid_t		pid;			/* 0 when not running */
	int32		restarts;		/* unexpected exits of this (source, index) */
	char		state[ADS_STATE_LEN];
	TimestampTz started_at;
	TimestampTz last_commit_at;
	TimestampTz last_error_at;
	char		last_error[ADS_ERROR_LEN];
	int32		nparts;
	AdsPartInfo parts[ADS_MAX_PARTS_PER_WORKER];
} AdsWorkerSlot;

typedef struct AdsShared
{
	slock_t		mutex;			/* protects launcher_* */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	int			nslots;
	AdsWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} AdsShared;

extern AdsShared *ads_shared;

/* What the launcher hands a consumer worker through bgw_extra. */
typedef struct AdsWorkerArgs
{
	int32		slot;
	bool		publisher;
	int32		source_id;
	int32		worker_index;
	int32		nworkers;
	int64		generation;
} AdsWorkerArgs;

/* adstream.c */
extern void ads_begin_tx(const char *activity);
extern void ads_end_tx(void);
extern void ads_wake_launcher_now(void);
extern bool ads_lock(const char *name, int32 key, bool exclusive, bool session, bool wait);
extern void ads_slot_set_state(AdsWorkerSlot *slot, const char *state);
extern void ads_slot_set_error(AdsWorkerSlot *slot, const char *msg);

/* launcher.c */
extern void ads_register_launcher(void);
extern PGDLLEXPORT void adstream_launcher_main(Datum arg);

/* consumer.c */
extern PGDLLEXPORT void adstream_consumer_main(Datum arg);

/* publisher.c */
extern PGDLLEXPORT void adstream_publisher_main(Datum arg);

#endif							/* ADSTREAM_H */
