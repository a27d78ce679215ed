/*
 * guc.h
 *     adstream's configuration parameters (src/guc.c).  The bottom layer:
 *     every other file may read these, none is read by guc.c.
 */
#ifndef ADSTREAM_GUC_H
#define ADSTREAM_GUC_H

#include "postgres.h"

extern char *adstream_database;
extern char *adstream_node_name;
extern int	adstream_max_workers;
extern int	adstream_batch_max_messages;
extern int	adstream_batch_max_ms;
extern int	adstream_max_message_bytes;
extern int	adstream_dead_letter_payload_bytes;
extern int	adstream_max_future_skew_s;
extern int	adstream_dedup_horizon_s;
extern int	adstream_dedup_index_size;
extern int	adstream_dedup_hot_size;
extern int	adstream_dedup_fingerprint_bits;
extern int	adstream_launcher_naptime_ms;
extern int	adstream_discovery_interval_s;
extern int	adstream_attribution_window_s;
extern int	adstream_view_through_window_s;
extern int	adstream_attribution_max_wait_s;
extern int	adstream_attribution_hold_ms;
extern int	adstream_minute_retention_s;
extern int	adstream_rejected_retention_s;
extern int	adstream_status_history_retention_s;
extern bool adstream_auto_maintenance;
extern int	adstream_partitions_interval_s;
extern int	adstream_retention_interval_s;
extern int	adstream_rollups_interval_s;

/*
 * Defines the parameters.  The server-wide ones (adstream.database,
 * node_name, max_workers, dedup_index_size, dedup_hot_size,
 * dedup_fingerprint_bits) size shared memory and exist only
 * when the library is preloaded; a backend that loads it for its SQL
 * functions gets the reloadable ones.
 */
extern void ads_define_gucs(bool preloading);

/* adstream.node_name, or the host name where the library is not preloaded. */
extern const char *ads_node_name_setting(void);

#endif							/* ADSTREAM_GUC_H */
