/*
 * registry.c
 *     The shared-memory registry of adstream's workers and the launcher's
 *     latch.  Each slot has a spinlock; everything here holds it only to
 *     copy a few fields.
 */
#include "registry.h"

#include "miscadmin.h"
#include "storage/ipc.h"
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

/* The worker enters the slot the launcher gave it; it leaves when it exits. */
void
ads_slot_attach(AdsWorkerSlot *slot)
{
	SpinLockAcquire(&slot->mutex);
	slot->pid = MyProcPid;
	slot->started_at = GetCurrentTimestamp();
	slot->last_error[0] = '\0';
	slot->last_error_at = 0;
	strlcpy(slot->state, "starting", ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
	before_shmem_exit(slot_detach, PointerGetDatum(slot));
}

void
ads_slot_set_state(AdsWorkerSlot *slot, const char *state)
{
	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->state, state, ADS_STATE_LEN);
	SpinLockRelease(&slot->mutex);
}

void
ads_slot_set_error(AdsWorkerSlot *slot, const char *msg)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	strlcpy(slot->last_error, msg, ADS_ERROR_LEN);
	slot->last_error_at = now;
	SpinLockRelease(&slot->mutex);
}

void
ads_slot_note_commit(AdsWorkerSlot *slot)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&slot->mutex);
	slot->last_commit_at = now;
	SpinLockRelease(&slot->mutex);
}

void
ads_slot_set_positions(AdsWorkerSlot *slot, int n, const AdsPositionInfo *positions)
{
	TimestampTz now = GetCurrentTimestamp();

	Assert(n <= ADS_MAX_TOPIC_PARTITIONS_PER_WORKER);
	SpinLockAcquire(&slot->mutex);
	slot->positions_at = now;
	slot->npositions = n;
	memcpy(slot->positions, positions, sizeof(AdsPositionInfo) * n);
	SpinLockRelease(&slot->mutex);
}

/* A consumer's view of its topic's size, which the launcher caps workers by. */
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
