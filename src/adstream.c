/*
 * adstream.c
 *     Module entry: _PG_init, the shared-memory hooks, and the commit hook
 *     that wakes the launcher after sources or sinks change.
 *
 * The layers below, top to bottom, are described in docs/architecture.md
 * ("The code").
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "dedup_index.h"
#include "guc.h"
#include "launcher.h"
#include "registry.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static object_access_hook_type prev_object_access_hook = NULL;
static bool wake_launcher_at_commit = false;

void		_PG_init(void);

static void
ads_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(ads_registry_shmem_size());
	ads_dedup_index_shmem_request();
}

static void
ads_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ads_registry_shmem_init();
	ads_dedup_index_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Sources are read by the launcher, so it must look only after the change
 * is committed; waking it earlier would make it see the old state and then
 * sleep for a whole naptime.
 */
static void
ads_xact_callback(XactEvent event, void *arg)
{
	if (!wake_launcher_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		ads_registry_wake_launcher();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_launcher_at_commit = false;
}

/* adstream._wake_launcher(): wake the launcher when this transaction commits. */
PG_FUNCTION_INFO_V1(adstream_wake_launcher);
Datum
adstream_wake_launcher(PG_FUNCTION_ARGS)
{
	wake_launcher_at_commit = true;
	PG_RETURN_VOID();
}

/*
 * DROP EXTENSION adstream wakes the launcher at commit, as the SQL API does,
 * so that it stops the workers at once, each with a LOG line saying why,
 * before they find their tables gone (issue #14, section 3).
 */
static void
ads_object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == ExtensionRelationId &&
		objectId == get_extension_oid("adstream", true))
		wake_launcher_at_commit = true;
}

void
_PG_init(void)
{
	ads_define_gucs(process_shared_preload_libraries_in_progress);
	RegisterXactCallback(ads_xact_callback, NULL);

	/* Loaded into a backend for its SQL functions only: no workers, no shared memory. */
	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_object_access_hook = object_access_hook;
	object_access_hook = ads_object_access;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = ads_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = ads_shmem_startup;
	ads_register_launcher();
}
