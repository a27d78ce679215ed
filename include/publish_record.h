/*
 * publish_record.h
 *     What identifies and what carries a published record: its uuid
 *     (SQL: adstream.record_uuid) and an ad_stats record's JSON value for
 *     adstream._outbox_page (SQL: adstream._ad_stats_record).  The record
 *     contract is docs/pinot.md's.
 */
#ifndef ADSTREAM_PUBLISH_RECORD_H
#define ADSTREAM_PUBLISH_RECORD_H

#include "postgres.h"

#include "fmgr.h"

extern Datum adstream_record_uuid(PG_FUNCTION_ARGS);
extern Datum adstream_ad_stats_record(PG_FUNCTION_ARGS);

#endif							/* ADSTREAM_PUBLISH_RECORD_H */
