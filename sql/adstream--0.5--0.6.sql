/* adstream--0.5--0.6.sql -- 0.6: operations, deployment and performance */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.6'" to load this file. \quit

/*
 * Takes an installation of 0.5 to the schema of adstream--0.6.sql.  Whatever
 * 0.6 changes goes both here and into adstream--0.6.sql: sql/upgrade.sql
 * compares the two paths object by object.
 */
