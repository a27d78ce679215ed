/*
 * sql_array.c
 *     SQL arrays built element by element.
 */
#include "sql_array.h"

#include "utils/array.h"
#include "utils/lsyscache.h"

void
ads_array_init(AdsArray *a, Oid elemtype, int cap)
{
	a->elemtype = elemtype;
	a->n = 0;
	a->cap = Max(cap, 1);
	a->has_nulls = false;
	a->values = palloc(sizeof(Datum) * a->cap);
	a->nulls = palloc(sizeof(bool) * a->cap);
}

Datum
ads_array_datum(const AdsArray *a)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {a->n};
	int			lbs[1] = {1};

	if (a->n == 0)
		return PointerGetDatum(construct_empty_array(a->elemtype));
	get_typlenbyvalalign(a->elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(a->values, a->has_nulls ? a->nulls : NULL, 1,
											  dims, lbs, a->elemtype, typlen, typbyval, typalign));
}
