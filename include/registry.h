/*
 * registry.h
 *     The shared-memory registry of adstream's workers (src/registry.c):
 *     one slot per running consumer or publisher, written by the launcher
 *     (which allocates slots) and by the worker in it (state, errors,
 *     positions), and read by the status functions.  It also holds the
 *     launcher's latch, so that anyone can wake it.
 */
#ifndef ADSTREAM_REGISTRY_H
#define ADSTREAM_REGISTRY_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define ADS_MAX_TOPIC_PARTITIONS_PER_WORKER 256
#define ADS_ERROR_LEN 256
#define ADS_STATE_LEN 32
#define ADS_STOP_REASON_LEN 96

/* What a worker does: consume a source, or publish a sink. */
typedef enum AdsWorkerKind
{
	ADS_WORKER_CONSUMER,
	ADS_WORKER_PUBLISHER
} AdsWorkerKind;

/* Where a consumer is in one Kafka partition of its topic. */
typedef struct AdsPositionInfo
{
	int32		partition;
	int64		high_watermark; /* broker's, from the last fetch; -1 unknown */
	int64		position;		/* next offset this worker will read */
	/*
	 * Status (issue #14): the time since which the oldest message not yet
	 * committed has been waiting at most (an upper bound, see
	 * consumer.c's pending_since()); 0 when the partition was read and
	 * committed to the broker's end at the report.
	 */
	TimestampTz pending_since;
} AdsPositionInfo;

typedef struct AdsWorkerSlot
{
	slock_t		mutex;			/* protects everything below */
	bool		in_use;			/* allocated by the launcher */
	Oid			database;		/* source and sink ids are only unique within it */
	AdsWorkerKind kind;
	int32		owner_id;		/* the source's id (consumer) or the sink's (publisher) */
	char		owner_name[NAMEDATALEN];
	int32		worker_index;	/* consumers: which share of the partitions; publishers: 0 */
	int32		nworkers;
	int64		generation;
	pid_t		pid;			/* 0 when not running */
	int32		restarts;		/* unexpected exits of this (owner, index) */
	char		state[ADS_STATE_LEN];
	TimestampTz started_at;
	TimestampTz last_commit_at;
	TimestampTz last_error_at;
	char		last_error[ADS_ERROR_LEN];
	/* Stopping and sizing (issue #14): */
	char		stop_reason[ADS_STOP_REASON_LEN];	/* why the launcher stops it; "" unless it does */
	int32		topic_partitions;	/* consumers: the topic's partition count as last seen; 0 unknown */
	TimestampTz positions_at;	/* when the worker last reported its positions */

	/*
	 * Status (issue #14): what source_status and sink_status say, and what
	 * the launcher records in adstream.status_history when it changes.
	 * last_error above is the *current* error: cleared on recovery (see
	 * ads_slot_clear_error), and kept across the worker's restarts, so that
	 * a crash-looping worker shows why.
	 */
	int8		connected;		/* ADS_CONN_*: the broker as the worker last saw it */
	TimestampTz connected_since;	/* when connected took its value */
	TimestampTz hw_current_at;	/* high watermarks known current up to this time */
	int8		error_class;	/* ADS_ERRCLASS_* of last_error */
	int64		errors_total;	/* errors set in this slot since it was allocated or reset */
	char		recent_error[ADS_ERROR_LEN];	/* the last error set, even if cleared since */
	TimestampTz recent_error_at;
	int32		npositions;
	AdsPositionInfo positions[ADS_MAX_TOPIC_PARTITIONS_PER_WORKER];
} AdsWorkerSlot;

/* The broker as a worker last saw it. */
#define ADS_CONN_UNKNOWN	(-1)	/* no answer yet */
#define ADS_CONN_DOWN		0		/* all brokers down, or no answer since an error */
#define ADS_CONN_UP			1		/* an answer since the last error */

/*
 * What proves an error over (ads_slot_clear_error, a mask of these): a
 * Kafka error ends with an answer from the broker (never with messages
 * already fetched), a failed batch or page with the next commit, the error
 * that ended a worker once its successor gets past it.
 */
#define ADS_ERRCLASS_NONE	0
#define ADS_ERRCLASS_KAFKA	1		/* from librdkafka: cleared by an answer from the broker */
#define ADS_ERRCLASS_WORK	2		/* a batch, pass or page failed: cleared by the next success */
#define ADS_ERRCLASS_EXIT	4		/* the worker exited with it: cleared once a successor works */
#define ADS_ERRCLASS_SETUP	8		/* cannot run as configured (schema version, a partition another node consumes): cleared when resolved */

/*
 * Positions older than this are not trusted to say a partition is read to
 * its end: its worker is stopped, stuck, or busy with a batch for longer,
 * and messages may be piling up behind the broker end it last saw.
 */
#define ADS_POSITIONS_STALE_MS 5000

/*
 * Status (issue #14): a worker the launcher wants but has no registry slot
 * for (adstream.max_workers is used up).  It has no slot to report in, so
 * the launcher lists it here; worker_status() and publisher_status() show it
 * as "no worker slot".
 */
#define ADS_MAX_UNPLACED 64

typedef struct AdsUnplaced
{
	Oid			database;
	AdsWorkerKind kind;
	int32		owner_id;
	int32		worker_index;
	char		owner_name[NAMEDATALEN];
	TimestampTz since;
} AdsUnplaced;

typedef struct AdsRegistry
{
	slock_t		mutex;			/* protects launcher_* and unplaced */
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	bool		launcher_registered;	/* the launcher in adstream.database is registered (launcher.c) */
	int			nunplaced;
	AdsUnplaced unplaced[ADS_MAX_UNPLACED];
	int			nslots;
	AdsWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} AdsRegistry;

/* NULL unless the library was preloaded. */
extern AdsRegistry *ads_registry;

/* What the launcher hands a worker through bgw_extra. */
typedef struct AdsWorkerArgs
{
	int32		slot;
	AdsWorkerKind kind;
	int32		owner_id;
	int32		worker_index;
	int32		nworkers;
	int64		generation;
} AdsWorkerArgs;

/* _PG_init and the shared-memory hooks. */
extern Size ads_registry_shmem_size(void);
extern void ads_registry_shmem_init(void);

/* "source" or "sink": what a worker of this kind serves, for messages. */
extern const char *ads_worker_kind_owner(AdsWorkerKind kind);

/* The launcher. */
extern void ads_registry_set_launcher(Latch *latch);
extern void ads_registry_clear_launcher(void);
extern void ads_registry_wake_launcher(void);

/* A worker in its slot. */
extern void ads_slot_attach(AdsWorkerSlot *slot);
extern void ads_slot_set_state(AdsWorkerSlot *slot, const char *state);
extern void ads_slot_set_error(AdsWorkerSlot *slot, const char *msg);
extern void ads_slot_note_commit(AdsWorkerSlot *slot);
extern void ads_slot_set_positions(AdsWorkerSlot *slot, int n, const AdsPositionInfo *positions);
extern void ads_slot_set_topic_partitions(AdsWorkerSlot *slot, int32 count);

/* The launcher asks a worker to stop, saying why (the worker logs it). */
extern void ads_slot_set_stop_reason(AdsWorkerSlot *slot, const char *reason);

/* Status (issue #14) */
extern void ads_slot_set_error_class(AdsWorkerSlot *slot, int errclass, const char *msg);
extern void ads_slot_clear_error(AdsWorkerSlot *slot, int classes);
extern void ads_slot_set_connected(AdsWorkerSlot *slot, bool up);
extern void ads_slot_set_connection(AdsWorkerSlot *slot, bool up, bool clear_errors);
extern int	ads_slot_connected(AdsWorkerSlot *slot);
extern bool ads_slot_healthy(AdsWorkerSlot *slot);

/* The launcher's list of workers without a registry slot, and a copy of it. */
extern void ads_registry_set_unplaced(int n, const AdsUnplaced *unplaced);
extern int	ads_registry_get_unplaced(AdsUnplaced *out);
/* The error an unplaced worker shows. */
extern void ads_unplaced_error(char *buf, size_t len);

#endif							/* ADSTREAM_REGISTRY_H */
