/*
 * txn.h
 *     The transactions of adstream's workers (src/txn.c): the SPI bracket
 *     around a short transaction, the one way a failed one is cleaned up,
 *     and adstream's own heavyweight locks.
 */
#ifndef ADSTREAM_TXN_H
#define ADSTREAM_TXN_H

#include "postgres.h"

extern void ads_begin_tx(const char *activity);

/* Called in every transaction ads_begin_tx begins, once it has a snapshot (worker.c sets it). */
extern void (*ads_begin_tx_hook) (void);
extern void ads_end_tx(void);

/*
 * In a PG_CATCH block: take the error, abort the transaction and go back to
 * memory context cxt (the one current before PG_TRY).  Returns the error,
 * allocated in cxt, for the caller to report with what it was doing.
 */
extern ErrorData *ads_abort_tx(MemoryContext cxt);

extern bool ads_lock(const char *name, int32 key, bool exclusive, bool session, bool wait);

#endif							/* ADSTREAM_TXN_H */
