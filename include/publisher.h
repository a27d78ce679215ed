/*
 * publisher.h
 *     The publisher worker of a sink (src/publisher.c), started by the launcher.
 */
#ifndef ADSTREAM_PUBLISHER_H
#define ADSTREAM_PUBLISHER_H

#include "postgres.h"

#include "fmgr.h"

extern PGDLLEXPORT void adstream_publisher_main(Datum arg);

#endif							/* ADSTREAM_PUBLISHER_H */
