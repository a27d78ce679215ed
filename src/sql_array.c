/*
 * sql_array.c
 *     SQL arrays built element by element, and a text[] argument read as C
 *     strings.
 */
#include "sql_array.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

int
ads_text_array_cstrings(ArrayType *arr, char ***out)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	*out = palloc0(sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return n;
}

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
