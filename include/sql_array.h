/*
 * sql_array.h
 *     One-dimensional SQL arrays built element by element, the way a batch
 *     passes its columns to a statement (unnest($1::int8[], ...)); see
 *     src/sql_array.c.
 */
#ifndef ADSTREAM_SQL_ARRAY_H
#define ADSTREAM_SQL_ARRAY_H

#include "postgres.h"

#include "event_time.h"
#include "utils/array.h"
#include "utils/timestamp.h"

typedef struct AdsArray
{
	Oid			elemtype;
	int			n;
	int			cap;
	bool		has_nulls;
	Datum	   *values;
	bool	   *nulls;
} AdsArray;

/* Room for cap elements, in the current memory context. */
extern void ads_array_init(AdsArray *a, Oid elemtype, int cap);
extern Datum ads_array_datum(const AdsArray *a);

/* A text[] argument as C strings (NULL elements as ""), in the current memory context. */
extern int	ads_text_array_cstrings(ArrayType *arr, char ***out);

static inline void
ads_array_add(AdsArray *a, Datum value)
{
	Assert(a->n < a->cap);
	a->values[a->n] = value;
	a->nulls[a->n++] = false;
}

static inline void
ads_array_add_null(AdsArray *a)
{
	Assert(a->n < a->cap);
	a->values[a->n] = (Datum) 0;
	a->nulls[a->n++] = true;
	a->has_nulls = true;
}

/* An event time (microseconds since the Unix epoch) as timestamptz. */
static inline void
ads_array_add_unix_us(AdsArray *a, int64 unix_us)
{
	ads_array_add(a, TimestampTzGetDatum(ads_unix_us_to_timestamptz(unix_us)));
}

#endif							/* ADSTREAM_SQL_ARRAY_H */
