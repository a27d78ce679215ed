/*
 * maintenance.h
 *     The launcher's share of maintenance (src/maintenance.c): the jobs it
 *     runs itself where pg_cron does not, and dedup expiry when the index
 *     fills.
 */
#ifndef ADSTREAM_MAINTENANCE_H
#define ADSTREAM_MAINTENANCE_H

#include "postgres.h"

/*
 * In the launcher's loop, outside any transaction: runs at most one due job,
 * each in its own transaction, and returns how many milliseconds the
 * launcher may sleep before it wants to be called again (0: more are due).
 * Never throws: a job's error is logged and recorded.
 */
extern long ads_maintenance_round(void);

#endif							/* ADSTREAM_MAINTENANCE_H */
