/*
 * registry.c
 *     The shared-memory registry of adstream's workers and the launcher's
 *     latch.  Each slot has a spinlock; everything here holds it only to
 *     copy a few fields.
 */
#include "registry.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/elog.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "guc.h"

AdsRegistry *ads_registry = NULL;

Size
ads_registry_shmem_size(void)
{
	return add_size(offsetof(AdsRegistry, slots),
					mul_size(sizeof(AdsWorkerSlot), adstream_max_workers));
}

/* Called with AddinShmemInitLock held. */
void
ads_registry_shmem_init(void)
{
	bool		found;

	ads_registry = ShmemInitStruct("adstream", ads_registry_shmem_size(), &found);
	if (!found)
	{
		memset(ads_registry, 0, ads_registry_shmem_size());
		SpinLockInit(&ads_registry->mutex);
		ads_registry->nslots = adstream_max_workers;
		for (int i = 0; i < adstream_max_workers; i++)
			SpinLockInit(&ads_registry->slots[i].mutex);
	}
}

const char *
ads_worker_kind_owner(AdsWorkerKind kind)
{
	return kind == ADS_WORKER_PUBLISHER ? "sink" : "source";
}

void
ads_registry_set_launcher(Latch *latch)
{
	SpinLockAcquire(&ads_registry->mutex);
	ads_registry->launcher_pid = MyProcPid;
	ads_registry->launcher_latch = latch;
	SpinLockRelease(&ads_registry->mutex);
}

void
ads_registry_clear_launcher(void)
{
	SpinLockAcquire(&ads_registry->mutex);
	if (ads_registry->launcher_pid == MyProcPid)
	{
		ads_registry->launcher_pid = 0;
		ads_registry->launcher_latch = NULL;
	}
	SpinLockRelease(&ads_registry->mutex);
}

void
ads_registry_wake_launcher(void)
{
	Latch	   *latch = NULL;

	if (ads_registry == NULL)
		return;
	SpinLockAcquire(&ads_registry->mutex);
	if (ads_registry->launcher_pid != 0)
		latch = ads_registry->launcher_latch;
	SpinLockRelease(&ads_registry->mutex);
	if (latch)
		SetLatch(latch);
}

/* On exit, however it happens: the slot no longer has a running worker. */
static void
slot_detach(int code, Datum arg)
{
	AdsWorkerSlot *slot = (AdsWorkerSlot *) DatumGetPointer(arg);

	SpinLockAcquire(&slot->mutex);
	if (slot->pid == MyProcPid)
	{
		slot->pid = 0;
		slot->npositions = 0;
		strlcpy(slot->state, "stopped", ADS_STATE_LEN);
	}
	SpinLockRelease(&slot->mutex);
}

/*
 * Status (issue #14): every error that reaches the server log from a worker
 * (an ERROR or FATAL that ends it, whatever raised it) also becomes its
 * slot's current error, so that a worker that exits and is restarted shows
 * why in source_status or sink_status rather than only in the log.  A stop
 * that was asked for (SIGTERM: pause, drop, shutdown) is not an error.
 */
static AdsWorkerSlot *my_slot = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

static void
slot_emit_log(ErrorData *edata)
{
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
	if (my_slot != NULL && edata->elevel >= ERROR && edata->message != NULL &&
		edata->sqlerrcode != ERRCODE_ADMIN_SHUTDOWN && edata->sqlerrcode != ERRCODE_QUERY_CANCELED)
		ads_slot_set_error_class(my_slot, ADS_ERRCLASS_EXIT, edata->message);
}

/*
 * The worker enters the slot the launcher gave it; it leaves when it exits.
 * The slot's error stays: what made a predecessor exit is the current error
 * until this worker recovers from it (ads_slot_clear_error).
 */
void
ads_slot_attach(AdsWorkerSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->pid = MyProcPid;
	slot->started_at = GetCurrentTimestamp();
	slot->connected = ADS_CONN_UNKNOWN;
	slot->connected_since = slot->started_at;
	slot->hw_current_at = 0;
	strlcpy(slot->state, "starting", ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
	before_shmem_exit(slot_detach, PointerGetDatum(slot));
	my_slot = slot;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = slot_emit_log;
}

/*
 * Status (issue #14): a change of state wakes the launcher, which records
 * it, except the round trip of every batch through "committing".
 */
void
ads_slot_set_state(AdsWorkerSlot *slot, const char *state)
{
	bool		wake;

	SpinLockAcquire(&slot->mutex);
	wake = strcmp(slot->state, state) != 0 &&
		strcmp(slot->state, "committing") != 0 && strcmp(state, "committing") != 0;
	strlcpy(slot->state, state, ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
	if (wake)
		ads_registry_wake_launcher();
}

void
ads_slot_set_error(AdsWorkerSlot *slot, const char *msg)
{
	ads_slot_set_error_class(slot, ADS_ERRCLASS_WORK, msg);
}

/* A commit proves the worker works: whatever error it had is over. */
void
ads_slot_note_commit(AdsWorkerSlot *slot)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	slot->last_commit_at = now;
	SpinLockRelease(&slot->mutex);
	ads_slot_clear_error(slot, ADS_ERRCLASS_WORK | ADS_ERRCLASS_EXIT);
}

void
ads_slot_set_positions(AdsWorkerSlot *slot, int n, const AdsPositionInfo *positions)
{
	TimestampTz now = GetCurrentTimestamp();

	Assert(n <= ADS_MAX_TOPIC_PARTITIONS_PER_WORKER);
	SpinLockAcquire(&slot->mutex);
	slot->positions_at = now;
	if (slot->connected == ADS_CONN_UP)
		slot->hw_current_at = now;
	slot->npositions = n;
	memcpy(slot->positions, positions, sizeof(AdsPositionInfo) * n);
	SpinLockRelease(&slot->mutex);
}

/* ---------------------------------------------------------------------
 * Status (issue #14): the current error, the broker connection.  The
 * launcher records their changes in adstream.status_history
 * (src/status.c); a change wakes it, so that the record is prompt.
 * ---------------------------------------------------------------------
 */

/* Also the process's own copy of what it set last, to wake the launcher once per change. */
void
ads_slot_set_error_class(AdsWorkerSlot *slot, int errclass, const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		changed;

	SpinLockAcquire(&slot->mutex);
	changed = strncmp(slot->last_error, msg, ADS_ERROR_LEN - 1) != 0;
	strlcpy(slot->last_error, msg, ADS_ERROR_LEN);
	slot->last_error_at = now;
	/* the same text again from elsewhere: any of its causes may prove it over */
	slot->error_class = (int8) (changed ? errclass : (slot->error_class | errclass));
	slot->errors_total++;
	strlcpy(slot->recent_error, msg, ADS_ERROR_LEN);
	slot->recent_error_at = now;
	SpinLockRelease(&slot->mutex);
	if (changed)
		ads_registry_wake_launcher();
}

/* Clears the current error if it is of one of the classes (a mask) that just proved over. */
void
ads_slot_clear_error(AdsWorkerSlot *slot, int classes)
{
	bool		cleared = false;

	SpinLockAcquire(&slot->mutex);
	if (slot->last_error[0] != '\0' && (slot->error_class & classes) != 0)
	{
		slot->last_error[0] = '\0';
		slot->last_error_at = 0;
		slot->error_class = ADS_ERRCLASS_NONE;
		cleared = true;
	}
	SpinLockRelease(&slot->mutex);
	if (cleared)
		ads_registry_wake_launcher();
}

/*
 * An answer from the broker (up) or all brokers down.  While up, the high
 * watermarks the worker reports are current.
 */
void
ads_slot_set_connected(AdsWorkerSlot *slot, bool up)
{
	ads_slot_set_connection(slot, up, up);
}

/*
 * As ads_slot_set_connected, but an answer that carried an error of its own
 * (the topic does not exist) clears no error: clear_errors false.
 */
void
ads_slot_set_connection(AdsWorkerSlot *slot, bool up, bool clear_errors)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		changed;

	SpinLockAcquire(&slot->mutex);
	changed = slot->connected != (up ? ADS_CONN_UP : ADS_CONN_DOWN);
	if (changed)
	{
		slot->connected = up ? ADS_CONN_UP : ADS_CONN_DOWN;
		slot->connected_since = now;
	}
	if (up)
		slot->hw_current_at = now;
	SpinLockRelease(&slot->mutex);
	if (up && clear_errors)
		ads_slot_clear_error(slot, ADS_ERRCLASS_KAFKA);
	if (changed)
		ads_registry_wake_launcher();
}

int
ads_slot_connected(AdsWorkerSlot *slot)
{
	int			c;

	SpinLockAcquire(&slot->mutex);
	c = slot->connected;
	SpinLockRelease(&slot->mutex);
	return c;
}

/* Connected, and no Kafka error waiting to be proven over. */
bool
ads_slot_healthy(AdsWorkerSlot *slot)
{
	bool		healthy;

	SpinLockAcquire(&slot->mutex);
	healthy = slot->connected == ADS_CONN_UP && (slot->error_class & ADS_ERRCLASS_KAFKA) == 0;
	SpinLockRelease(&slot->mutex);
	return healthy;
}

void
ads_slot_set_topic_partitions(AdsWorkerSlot *slot, int32 count)
{
	SpinLockAcquire(&slot->mutex);
	slot->topic_partitions = count;
	SpinLockRelease(&slot->mutex);
}

void
ads_slot_set_stop_reason(AdsWorkerSlot *slot, const char *reason)
{
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->stop_reason, reason, ADS_STOP_REASON_LEN);
	SpinLockRelease(&slot->mutex);
}

/*
 * Replaces the list of workers without a registry slot.  A worker that was
 * in the list already keeps the time since when it has been waiting.
 */
void
ads_registry_set_unplaced(int n, const AdsUnplaced *unplaced)
{
	TimestampTz now = GetCurrentTimestamp();
	AdsUnplaced copy[ADS_MAX_UNPLACED];

	n = Min(n, ADS_MAX_UNPLACED);
	memcpy(copy, unplaced, sizeof(AdsUnplaced) * n);
	SpinLockAcquire(&ads_registry->mutex);
	for (int i = 0; i < n; i++)
	{
		copy[i].since = now;
		for (int j = 0; j < ads_registry->nunplaced; j++)
		{
			AdsUnplaced *u = &ads_registry->unplaced[j];

			if (u->database == copy[i].database && u->kind == copy[i].kind &&
				u->owner_id == copy[i].owner_id && u->worker_index == copy[i].worker_index)
				copy[i].since = u->since;
		}
	}
	memcpy(ads_registry->unplaced, copy, sizeof(AdsUnplaced) * n);
	ads_registry->nunplaced = n;
	SpinLockRelease(&ads_registry->mutex);
}

int
ads_registry_get_unplaced(AdsUnplaced *out)
{
	int			n;

	SpinLockAcquire(&ads_registry->mutex);
	n = ads_registry->nunplaced;
	memcpy(out, ads_registry->unplaced, sizeof(AdsUnplaced) * n);
	SpinLockRelease(&ads_registry->mutex);
	return n;
}

void
ads_unplaced_error(char *buf, size_t len)
{
	snprintf(buf, len,
			 "no adstream worker slot: adstream.max_workers (%d) is used up by other workers; raise it and restart the server",
			 adstream_max_workers);
}
