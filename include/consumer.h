/*
 * consumer.h
 *     The consumer worker (src/consumer.c), started by the launcher.
 */
#ifndef ADSTREAM_CONSUMER_H
#define ADSTREAM_CONSUMER_H

#include "postgres.h"

#include "fmgr.h"

extern PGDLLEXPORT void adstream_consumer_main(Datum arg);

#endif							/* ADSTREAM_CONSUMER_H */
