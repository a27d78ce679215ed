/*
 * sql_node.c
 *     The installation's identity from SQL: its origin, its node name, and
 *     the timeline that published versions are made from.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "executor/spi.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/builtins.h"

#include "catalog.h"
#include "guc.h"

/*
 * adstream._origin(): this installation's identity, which sources.origin and
 * sinks.origin must equal for their workers to run (see catalog.c).
 */
PG_FUNCTION_INFO_V1(adstream_origin);
Datum
adstream_origin(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ads_catalog_origin()));
}

/*
 * adstream._node_name_setting(): the name a node takes in adstream.node when
 * it is first named (adstream.node_name, by default the host name).
 */
PG_FUNCTION_INFO_V1(adstream_node_name_setting);
Datum
adstream_node_name_setting(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(ads_node_name_setting()));
}

/*
 * adstream.node_name(): the node's name, adstream.node's once it has a row,
 * else the setting.  Part of every ad_stats key, so _record_key asks for it
 * for every published row: looked up once per transaction (it cannot
 * change while sinks exist, see set_node_name).
 */
PG_FUNCTION_INFO_V1(adstream_node_name_fn);
Datum
adstream_node_name_fn(PG_FUNCTION_ARGS)
{
	static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
	static char *cached = NULL;

	if (cached == NULL || MyProc->lxid != cached_lxid)
	{
		char	   *name = NULL;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "adstream: SPI_connect failed");
		if (SPI_execute("SELECT name FROM adstream.node", true, 1) == SPI_OK_SELECT && SPI_processed == 1)
			name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		if (cached)
			pfree(cached);
		cached = MemoryContextStrdup(TopMemoryContext, name ? name : ads_node_name_setting());
		SPI_finish();
		cached_lxid = MyProc->lxid;
	}
	PG_RETURN_TEXT_P(cstring_to_text(cached));
}

/*
 * adstream._timeline(): the timeline this server writes WAL on (on a standby,
 * the one it replays).  A promotion moves to a higher timeline than any the
 * cluster's history has used, so published versions, which carry it in their
 * high bits (adstream._version_base), rise across failovers.
 */
PG_FUNCTION_INFO_V1(adstream_timeline);
Datum
adstream_timeline(PG_FUNCTION_ARGS)
{
	TimeLineID	tli;

	if (RecoveryInProgress())
		(void) GetXLogReplayRecPtr(&tli);
	else
		tli = GetWALInsertionTimeLine();
	PG_RETURN_INT32((int32) tli);
}
