-- usagekit: least-privilege roles for replicas.
--
--   usagekit_writer    runs the flush and nothing else: the single flush statement of
--                      @usagekit/boundary-usage (packages/boundary-usage/src/lib/sql.ts).
--   usagekit_reporter  everything the writer does (a replica runs both), plus the cutover,
--                      the period election, the telemetry outbox and flush-sequence retention.
--
-- Both are NOLOGIN group roles: grant one of them to the LOGIN user each replica connects as,
--   CREATE ROLE replica_a LOGIN PASSWORD '…' IN ROLE usagekit_reporter;
--
-- How to run it. After migrations, on every database that holds the usagekit tables, in ONE
-- transaction, as the user that owns the tables (the one migrate() ran as) and that has
-- CREATEROLE (or is a superuser):
--   applyRoles({ databaseUrl, schema? })                          from @usagekit/db, or
--   psql -v ON_ERROR_STOP=1 --single-transaction -f packages/db/sql/roles.sql "$DATABASE_URL"
-- The tables live in usagekit's own schema, `usagekit` unless migrate() was given another
-- one; for another one set the custom setting usagekit.schema for the run (applyRoles does
-- it from its `schema` option), e.g. PGOPTIONS='-c usagekit.schema=telemetry' psql …
-- It is idempotent and converges: run it again after every migration that adds a table, and
-- it leaves the two roles with exactly the privileges below, whatever they had before
-- (REVOKE ALL, then GRANT, in one transaction, so no session ever sees them half-done).
-- It is separate from migrate() on purpose: migrations must work for a user without
-- CREATEROLE, and a managed database may give the migration user no such right.
--
-- Running it from several processes at once is safe:
--   * REVOKE/GRANT on one table by two transactions at once fails with "tuple concurrently
--     updated", so the whole run holds a transaction-scoped advisory lock (LockIds.roles in
--     @usagekit/db). Advisory locks are per database, which is exactly the scope of grants.
--   * Roles are cluster-wide, so two databases' runs can race to create the same role. The
--     loser's CREATE ROLE waits for the winner's commit and then fails with duplicate_object
--     or unique_violation (pg_authid's unique index); the DO blocks catch both.
--
-- What is deliberately NOT here: functions. pg_advisory_xact_lock(_shared) and set_config
-- are executable by PUBLIC in every PostgreSQL; granting EXECUTE on pg_catalog functions
-- would need a superuser. Database-wide defaults (PUBLIC's CONNECT and TEMPORARY) are the
-- DBA's policy and stay as they are; USAGE on the schema and CONNECT are granted explicitly
-- (where this user may) so a database that revoked them from PUBLIC still works.

-- LockIds.roles = 0x7573_6167_0000_0002. A test checks that this literal equals the registry.
SELECT pg_advisory_xact_lock(8463215219768819714);

-- Every name below resolves in usagekit's schema only, for this transaction (SET LOCAL):
-- the script never touches a host's table of the same name in public.
SELECT set_config('search_path',
                  quote_ident(coalesce(nullif(current_setting('usagekit.schema', true), ''), 'usagekit')),
                  true);

-- Fail early and clearly instead of half-working: a user without CREATEROLE cannot create the
-- roles, and a user who does not own the tables gets only WARNINGs from GRANT ("no privileges
-- were granted") and would leave the roles without rights.
-- Looked up in the catalogs by name, not through search_path: a user without USAGE on the
-- schema would not see it there, and would get a misleading "does not exist".
DO $$
DECLARE
  usagekit_schema text := coalesce(nullif(current_setting('usagekit.schema', true), ''), 'usagekit');
  usagekit_tables text[] := ARRAY['boundary_usage_stats', 'boundary_usage_ids',
                                  'boundary_usage_flush_sequences', 'telemetry_locks', 'telemetry_reports'];
  missing text;
  foreign_owned text;
BEGIN
  IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'usagekit roles: % lacks CREATEROLE', current_user
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run applyRoles()/roles.sql as a user with CREATEROLE (or a superuser) that owns the usagekit tables.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = usagekit_schema) THEN
    RAISE EXCEPTION 'usagekit roles: schema % does not exist in this database', usagekit_schema
      USING ERRCODE = 'invalid_schema_name', HINT = 'Run migrate() first (with the same schema).';
  END IF;
  SELECT string_agg(t, ', ') INTO missing
    FROM unnest(usagekit_tables) AS t
   WHERE NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = usagekit_schema AND c.relname = t AND c.relkind IN ('r', 'p'));
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'usagekit roles: tables % do not exist in schema %', missing, usagekit_schema
      USING ERRCODE = 'undefined_table', HINT = 'Run migrate() first.';
  END IF;
  SELECT string_agg(c.relname, ', ' ORDER BY c.relname) INTO foreign_owned
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = usagekit_schema AND c.relname = ANY (usagekit_tables)
     AND NOT pg_has_role(current_user, c.relowner, 'USAGE');
  IF foreign_owned IS NOT NULL THEN
    RAISE EXCEPTION 'usagekit roles: % does not own %', current_user, foreign_owned
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run it as the user that ran the migrations (the tables'' owner).';
  END IF;
END
$$;

DO $$
BEGIN
  CREATE ROLE usagekit_writer NOLOGIN;
  COMMENT ON ROLE usagekit_writer IS
    'usagekit: may run the boundary-usage flush only (see packages/db/sql/roles.sql).';
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- exists already, or another database's run created it a moment ago
END
$$;

DO $$
BEGIN
  CREATE ROLE usagekit_reporter NOLOGIN;
  COMMENT ON ROLE usagekit_reporter IS
    'usagekit: flush, cutover, period election, telemetry outbox, retention (see packages/db/sql/roles.sql).';
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

-- A replica that reports also flushes: the reporter inherits the writer's rights. Checked
-- first so a second run does nothing (on PostgreSQL 16+ even a repeated GRANT needs ADMIN on
-- the role); the race with another database's run ends in unique_violation.
DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_auth_members
     WHERE roleid = 'usagekit_writer'::regrole AND member = 'usagekit_reporter'::regrole
  ) THEN
    GRANT usagekit_writer TO usagekit_reporter;
  END IF;
EXCEPTION WHEN unique_violation THEN
  NULL;
END
$$;

-- Start from nothing in usagekit's schema, so the result is exactly what follows even if
-- someone granted more by hand. REVOKE ALL on a table also revokes its column privileges.
-- USAGE on usagekit's schema is required (PUBLIC has none on a schema other than public), so
-- a user who may not grant it fails here, clearly. The database usually belongs to someone
-- else (a DBA); a GRANT there by a user who may not grant only WARNs, so it is attempted only
-- when allowed: PUBLIC has CONNECT by default, which is enough unless a DBA revoked it.
DO $$
DECLARE
  -- By name, not current_schema(): that is NULL for a user without USAGE on it, and this block
  -- must say so clearly rather than fail to format a NULL identifier.
  usagekit_schema text := coalesce(nullif(current_setting('usagekit.schema', true), ''), 'usagekit');
BEGIN
  EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM usagekit_writer, usagekit_reporter',
                 usagekit_schema);
  IF NOT has_schema_privilege(usagekit_schema, 'USAGE WITH GRANT OPTION') THEN
    RAISE EXCEPTION 'usagekit roles: % may not grant USAGE on schema %', current_user, usagekit_schema
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Run it as the user that ran migrate() (it created and owns the schema), or have the schema''s owner grant USAGE.';
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO usagekit_writer, usagekit_reporter',
                 usagekit_schema);
  IF has_database_privilege(current_database(), 'CONNECT WITH GRANT OPTION') THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO usagekit_writer, usagekit_reporter',
                   current_database());
  END IF;
END
$$;

-- ---------------------------------------------------------------------------------------
-- usagekit_writer: the flush statement (sql.ts flushBody), nothing more.
--
-- The statement is two or three INSERT … ON CONFLICT CTEs (the ids CTE only when it carries ids),
-- plus a separate read when a flush was not applied. PostgreSQL needs INSERT on the columns
-- written, UPDATE on the columns the DO UPDATE sets, and SELECT on every column the statement
-- READS: the conflict target, the DO UPDATE expressions and WHERE (including EXCLUDED.x),
-- and RETURNING. Column-level SELECT keeps the rest unreadable (e.g. window_start, other
-- replicas' counts, the ids table), and there is no DELETE anywhere.
-- ---------------------------------------------------------------------------------------

-- stats: INSERT all nine columns; ON CONFLICT (replica_id) DO UPDATE SET the counts and
-- updated_at from parameters and from b.allowed_requests + EXCLUDED.allowed_requests (same
-- for denied) and EXCLUDED.updated_at; RETURNING (xmax = 0), a system column; and, for a
-- flush not applied, the separate re-read of whether (first_writer_id, first_sequence) is its
-- own (sql.ts readNotApplied).
GRANT INSERT (replica_id, unique_workspaces_count, unique_users_count, allowed_requests,
              denied_requests, window_start, updated_at, first_sequence, first_writer_id)
   ON boundary_usage_stats TO usagekit_writer;
GRANT UPDATE (unique_workspaces_count, unique_users_count, allowed_requests, denied_requests,
              updated_at)
   ON boundary_usage_stats TO usagekit_writer;
GRANT SELECT (replica_id, allowed_requests, denied_requests, updated_at, xmax, first_sequence,
              first_writer_id)
   ON boundary_usage_stats TO usagekit_writer;

-- ids: INSERT (kind, id) … ON CONFLICT DO NOTHING without a target reads nothing.
GRANT INSERT (kind, id) ON boundary_usage_ids TO usagekit_writer;

-- flush sequences: INSERT … ON CONFLICT (replica_id, writer_id) DO UPDATE SET last_sequence,
-- updated_at from EXCLUDED WHERE s.last_sequence < EXCLUDED.last_sequence RETURNING true; for a
-- flush not applied, the re-read of the writer's stored last_sequence.
GRANT INSERT (replica_id, writer_id, last_sequence, updated_at)
   ON boundary_usage_flush_sequences TO usagekit_writer;
GRANT UPDATE (last_sequence, updated_at) ON boundary_usage_flush_sequences TO usagekit_writer;
GRANT SELECT (replica_id, writer_id, last_sequence, updated_at)
   ON boundary_usage_flush_sequences TO usagekit_writer;

-- ---------------------------------------------------------------------------------------
-- usagekit_reporter: the writer's rights (inherited) plus
-- ---------------------------------------------------------------------------------------

-- the cutover: WITH deleted AS (DELETE … RETURNING *) over stats and ids, summed.
GRANT SELECT, DELETE ON boundary_usage_stats, boundary_usage_ids TO usagekit_reporter;
-- the election: INSERT the period's row, DELETE expired ones (their WHERE reads the table).
GRANT SELECT, INSERT, DELETE ON telemetry_locks TO usagekit_reporter;
-- the outbox: written in the cutover transaction, then delivered, retried and pruned.
GRANT SELECT, INSERT, UPDATE, DELETE ON telemetry_reports TO usagekit_reporter;
-- retention: DELETE flush sequences of replicas gone for long (WHERE updated_at < …).
GRANT SELECT, DELETE ON boundary_usage_flush_sequences TO usagekit_reporter;
