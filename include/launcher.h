/*
 * launcher.h
 *     The launcher (src/launcher.c): the static worker that starts and stops
 *     consumers and publishers.
 */
#ifndef ADSTREAM_LAUNCHER_H
#define ADSTREAM_LAUNCHER_H

#include "postgres.h"

#include "fmgr.h"

/* From _PG_init, while preloading. */
extern void ads_register_launcher(void);
extern PGDLLEXPORT void adstream_launcher_main(Datum arg);		/* waits for adstream.database */
extern PGDLLEXPORT void adstream_launcher_db_main(Datum arg);	/* the launcher proper */

#endif							/* ADSTREAM_LAUNCHER_H */
