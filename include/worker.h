/*
 * worker.h
 *     What every adstream background worker does the same way (src/worker.c):
 *     start in the slot the launcher gave it, answer signals and reloads,
 *     sleep on its latch, and back off after a failure.
 */
#ifndef ADSTREAM_WORKER_H
#define ADSTREAM_WORKER_H

#include "postgres.h"

#include "registry.h"

/*
 * In a consumer's or publisher's main function: reads its arguments from
 * bgw_extra, installs the signal handlers, connects to adstream.database and
 * enters its registry slot.  Returns the slot.
 */
extern AdsWorkerSlot *ads_worker_start(AdsWorkerArgs *args);

/* Apply a pending configuration reload (SIGHUP). */
extern void ads_worker_reload_config(void);

/*
 * Sleep up to ms on the latch, then answer interrupts; exits cleanly if
 * asked to stop (call it only where the worker may stop).
 */
extern void ads_worker_wait(long ms);

/*
 * Stopping cleanly (issue #14): SIGTERM asks, and the worker exits at its
 * next safe point with a LOG line naming its source or sink and the reason
 * the launcher gave (ads_worker_exit_if_stopped); SIGUSR2 is die().
 */
extern bool ads_worker_stop_requested(void);
extern void ads_worker_exit_if_stopped(void);
extern void ads_worker_exit(const char *why) pg_attribute_noreturn();
/*
 * After a failure: if the worker's source or sink is no longer enabled in its
 * generation (is_current, from catalog.h, says so; paused, altered, renamed,
 * dropped, or the extension dropped), the launcher is stopping the worker and
 * the failure is no error: wait a moment for the launcher's reason and stop
 * with a LOG line.  Returns when it is current, or when that cannot be told.
 * what: "source" or "sink".
 */
extern void ads_worker_exit_if_changed(bool (*is_current) (int32 owner_id, int64 generation),
									   const AdsWorkerArgs *args, const char *what);
/* "adstream consumer 1/2 of source "ads_eu"" or "adstream sink "pinot"", for messages. */
extern const char *ads_worker_name(void);
extern void ads_worker_set_application_name(const char *name);

/* The delay before retry number attempt (0-based): min_ms doubling up to max_ms. */
extern long ads_backoff_ms(int attempt, long min_ms, long max_ms);

/*
 * Status (issue #14): waits, in state "waiting for update" with the reason
 * as the slot's error, while the installed SQL objects are of another
 * version than the library.  kind and name ("source", "ads_eu") for messages.
 */
extern void ads_worker_wait_for_schema(AdsWorkerSlot *slot, const char *kind, const char *name);

#endif							/* ADSTREAM_WORKER_H */
