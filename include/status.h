/*
 * status.h
 *     The durable history of the workers' states and errors (issue #14),
 *     written by the launcher (src/status.c).
 */
#ifndef ADSTREAM_STATUS_H
#define ADSTREAM_STATUS_H

#include "postgres.h"

/*
 * In the launcher's loop, outside any transaction: compares every worker
 * slot of this database with what was last recorded for its worker and, if
 * anything changed (state, connection, current error), records the change
 * in adstream.status_history and the counters in adstream.status_counters,
 * in one short transaction of its own.  Returns how long the launcher may
 * sleep before it wants to be called again.  Never throws.
 */
extern long ads_status_round(void);

#endif							/* ADSTREAM_STATUS_H */
