/*
 * publish_record.h
 *     The JSON value of a published ad_stats record, written in C for
 *     adstream._outbox_page (SQL: adstream._ad_stats_record).  The record
 *     contract is docs/pinot.md's.
 */
#ifndef ADSTREAM_PUBLISH_RECORD_H
#define ADSTREAM_PUBLISH_RECORD_H

#include "postgres.h"

#include "fmgr.h"

extern Datum adstream_ad_stats_record(PG_FUNCTION_ARGS);

#endif							/* ADSTREAM_PUBLISH_RECORD_H */
