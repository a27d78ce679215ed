/*
 * guc.c
 *     adstream's configuration parameters: their storage, descriptions,
 *     units and ranges.
 */
#include "guc.h"

#include <unistd.h>

#include "utils/guc.h"
#include "utils/memutils.h"

char	   *adstream_database = NULL;
char	   *adstream_node_name = NULL;
int			adstream_max_workers = 16;
int			adstream_batch_max_messages = 50000;
int			adstream_batch_max_ms = 100;
int			adstream_max_message_bytes = 1024 * 1024;
int			adstream_dead_letter_payload_bytes = 8192;
int			adstream_max_future_skew_s = 300;
int			adstream_dedup_horizon_s = 3600;
int			adstream_dedup_index_size = 200000000;
int			adstream_dedup_hot_size = 1000000;
int			adstream_dedup_fingerprint_bits = 19;
int			adstream_launcher_naptime_ms = 1000;
int			adstream_discovery_interval_s = 30;
int			adstream_attribution_window_s = 86400;
int			adstream_view_through_window_s = 0;
int			adstream_attribution_max_wait_s = 600;
int			adstream_attribution_hold_ms = 2000;
int			adstream_minute_retention_s = 7 * 86400;
int			adstream_rejected_retention_s = 7 * 86400;
int			adstream_status_history_retention_s = 30 * 86400;
bool		adstream_auto_maintenance = true;
int			adstream_partitions_interval_s = 600;
int			adstream_retention_interval_s = 300;
int			adstream_rollups_interval_s = 60;

static void
define_reloadable(void)
{
	DefineCustomIntVariable("adstream.batch_max_messages",
							"Commit a batch once it holds this many messages.",
							NULL, &adstream_batch_max_messages, 50000, 1, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.batch_max_ms",
							"Commit a batch at the latest this long after its first message.",
							NULL, &adstream_batch_max_ms, 100, 1, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_message_bytes",
							"Messages larger than this are dead-lettered as oversized.",
							NULL, &adstream_max_message_bytes, 1024 * 1024, 64, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dead_letter_payload_bytes",
							"How much of a dead letter's value is kept; a dead letter kept whole can be re-driven.",
							"Set it to adstream.max_message_bytes or more to keep every payload whole.",
							&adstream_dead_letter_payload_bytes, 8192, 0, 64 * 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_future_skew",
							"Events whose time is further ahead of the wall clock are dead-lettered.",
							NULL, &adstream_max_future_skew_s, 300, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dedup_horizon",
							"How far behind a source's event-time watermark an event id is remembered; older events are dead-lettered as too_late.",
							NULL, &adstream_dedup_horizon_s, 3600, 60, 30 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.launcher_naptime",
							"How often the launcher rechecks sources and sinks when nothing wakes it.",
							NULL, &adstream_launcher_naptime_ms, 1000, 100, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.partition_discovery_interval",
							"How often consumer workers look for new partitions of their topic.",
							NULL, &adstream_discovery_interval_s, 30, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.attribution_window",
							"An order is credited to the last click at most this long before it.",
							NULL, &adstream_attribution_window_s, 86400, 1, 90 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.view_through_window",
							"Without a matching click, credit the last impression this long before the order; 0 turns view-through off.",
							NULL, &adstream_view_through_window_s, 0, 0, 90 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.attribution_max_wait",
							"An order waits at most this long for the ad-events watermark to pass its time.",
							NULL, &adstream_attribution_max_wait_s, 600, 0, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.attribution_hold",
							"The orders worker holds an order the ad-events watermark has not passed, unread, at most this long before storing it waiting; 0 stores every order as it is read.",
							"Held orders are judged as they are stored once the watermark passes them; the source's stored offset stays behind them, so a restart reads them again.",
							&adstream_attribution_hold_ms, 2000, 0, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.minute_retention",
							"Minute aggregates older than this are dropped by adstream.drop_expired_partitions().",
							NULL, &adstream_minute_retention_s, 7 * 86400, 3600, 3650 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.rejected_retention",
							"Dead letters older than this are deleted by adstream.drop_expired_partitions().",
							NULL, &adstream_rejected_retention_s, 7 * 86400, 60, 3650 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	/* Status (issue #14): adstream.status_history, trimmed by the retention job. */
	DefineCustomIntVariable("adstream.status_history_retention",
							"Rows of adstream.status_history older than this are deleted by adstream.drop_expired_partitions().",
							NULL, &adstream_status_history_retention_s, 30 * 86400, 3600, 3650 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	/* Maintenance (src/maintenance.c, adstream._maintenance_jobs()). */
	DefineCustomBoolVariable("adstream.auto_maintenance",
							 "Runs the maintenance jobs automatically: in pg_cron where it is installed in adstream.database, otherwise in the launcher.",
							 "Off: nothing runs them; call adstream.run_maintenance(job) yourself (see adstream.maintenance_status).",
							 &adstream_auto_maintenance, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.partitions_interval",
							"How often the maintenance job adstream_partitions creates the partitions of the coming day.",
							NULL, &adstream_partitions_interval_s, 600, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.retention_interval",
							"How often the maintenance job adstream_retention expires dedup state, ad events, minutes and dead letters.",
							NULL, &adstream_retention_interval_s, 300, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.rollups_interval",
							"How often the maintenance job adstream_rollups refreshes the hour, 6-hour and day rollups.",
							NULL, &adstream_rollups_interval_s, 60, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

/* The host name, or "adstream" if it has none. */
static char *
host_name(void)
{
	char		host[256];

	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		strlcpy(host, "adstream", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	return MemoryContextStrdup(TopMemoryContext, host);
}

/*
 * The name a node takes when it first needs one (adstream.node, in the
 * database): adstream.node_name, whose default is the host name; the host
 * name where the library is not preloaded.
 */
const char *
ads_node_name_setting(void)
{
	static char *host = NULL;

	if (adstream_node_name != NULL)
		return adstream_node_name;
	if (host == NULL)
		host = host_name();
	return host;
}

static void
define_server_wide(void)
{
	/*
	 * Each installation's rows are its own in Pinot.  The name is kept in
	 * the database once a sink exists (adstream.node), so that a promoted
	 * standby on another host keeps it; this only seeds it.
	 */
	DefineCustomStringVariable("adstream.node_name",
							   "Name this installation takes in the database (adstream.node) when its first sink is created; part of Pinot's primary key.",
							   "Give every node that feeds the same Pinot table its own name.  Once named, the database's name is used: a different setting stops the sinks.",
							   &adstream_node_name, host_name(),
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("adstream.database",
							   "Database in which the adstream workers run.",
							   NULL, &adstream_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.max_workers",
							"Maximum number of adstream workers: the consumers of all sources and the publishers of all sinks (shared-memory slots).",
							"Each also needs a max_worker_processes slot.",
							&adstream_max_workers, 16, 1, 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dedup_index_size",
							"Capacity, in event ids, of the shared-memory index that deduplicates ad events.",
							"Size it for the peak event rate times (adstream.dedup_horizon + 1 hour); each id takes about 4.2 bytes of shared memory (a cuckoo-filter slot), plus the hot tier (adstream.dedup_hot_size).",
							&adstream_dedup_index_size, 200000000, 1000, 2000000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dedup_hot_size",
							"Event ids the dedup index keeps whole in its hot tier: the claims of batches in flight and the most recent ids.",
							"At least the workers' batches in flight (adstream.batch_max_messages per worker); about 89 bytes each.",
							&adstream_dedup_hot_size, 1000000, 1000, 100000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("adstream.dedup_fingerprint_bits",
							"Bits of each event id's fingerprint in the dedup filter (for tests: fewer bits make the filter's false positives, each checked in dedup_log, frequent).",
							NULL,
							&adstream_dedup_fingerprint_bits, 19, 1, 19,
							PGC_POSTMASTER, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
}

void
ads_define_gucs(bool preloading)
{
	define_reloadable();
	if (preloading)
		define_server_wide();
	MarkGUCPrefixReserved("adstream");
}
