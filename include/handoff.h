/*
 * handoff.h
 *     Moving partitions between nodes (issue #13, part 3): the C half of
 *     adstream.import_partitions, which puts a handoff's event ids into the
 *     dedup index.  See src/handoff.c; the rest is SQL
 *     (sql/adstream--0.6.sql, "#13 partition handoff").
 */
#ifndef ADSTREAM_HANDOFF_H
#define ADSTREAM_HANDOFF_H

#include "postgres.h"

#include "fmgr.h"

extern Datum adstream_dedup_import(PG_FUNCTION_ARGS);

#endif							/* ADSTREAM_HANDOFF_H */
