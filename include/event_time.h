/*
 * event_time.h
 *     Event time as the parser gives it (microseconds since the Unix epoch,
 *     UTC) and its conversions: to PostgreSQL timestamps, and to the minute
 *     and hour that aggregates and time partitions are keyed by.  Pure
 *     arithmetic on PostgreSQL's own constants, never the session TimeZone.
 */
#ifndef ADSTREAM_EVENT_TIME_H
#define ADSTREAM_EVENT_TIME_H

#include "postgres.h"

#include "datatype/timestamp.h"

#define ADS_UNIX_EPOCH_OFFSET_US \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY)

static inline TimestampTz
ads_unix_us_to_timestamptz(int64 us)
{
	return (TimestampTz) (us - ADS_UNIX_EPOCH_OFFSET_US);
}

static inline int64
ads_timestamptz_to_unix_us(TimestampTz ts)
{
	return (int64) ts + ADS_UNIX_EPOCH_OFFSET_US;
}

/* Floor division, so that instants before the epoch fall in the right unit. */
static inline int64
ads_floor_div(int64 us, int64 unit)
{
	return us / unit - (us % unit < 0 ? 1 : 0);
}

/* Start of the minute (the aggregation window) that holds us. */
static inline int64
ads_minute_start_us(int64 us)
{
	return ads_floor_div(us, USECS_PER_MINUTE) * USECS_PER_MINUTE;
}

/* Hours since the epoch: the grain of dedup state and time partitions. */
static inline int32
ads_hour_number(int64 us)
{
	return (int32) ads_floor_div(us, USECS_PER_HOUR);
}

static inline int64
ads_hour_start_us(int64 us)
{
	return (int64) ads_hour_number(us) * USECS_PER_HOUR;
}

#endif							/* ADSTREAM_EVENT_TIME_H */
