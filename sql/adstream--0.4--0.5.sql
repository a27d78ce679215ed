/* adstream--0.4--0.5.sql -- 0.5, the redesign release */

\echo Use "ALTER EXTENSION adstream UPDATE TO '0.5'" to load this file. \quit

/*
 * 0.5 is the redesign release.  From 0.5 on, a fresh install runs the full
 * script adstream--0.5.sql instead of 0.1 and the chain of upgrades; this
 * script takes an installation of 0.4 to the same schema.  Whatever 0.5
 * changes goes both here and into adstream--0.5.sql: sql/upgrade.sql
 * compares the two paths object by object.
 *
 * Nothing changes yet.
 */
