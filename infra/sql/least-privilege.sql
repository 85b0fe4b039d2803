-- Least privilege for Haven's services (the API and the worker) on PostgreSQL.
--
-- The services connect as a login role that is a member of `haven_app`. That role can read and
-- write the case data, and can only INSERT and SELECT the audit trail: UPDATE, DELETE and TRUNCATE
-- on audit_events, audit_seals and audit_checkpoints are refused by privilege, before the
-- append-only triggers (migrations 0001 and 0004) are even reached. Neither can it change the
-- schema, so it cannot drop or disable those triggers: only the owner of the tables can.
--
-- Apply as the owner of the tables (the role that runs migrations) or a superuser, in the Haven
-- database, after migrating, and again after every migration (new tables get their grants from
-- here; the file is idempotent):
--
--   psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 -f infra/sql/least-privilege.sql
--
-- then give each service a login of its own (passwords from your secret store):
--
--   CREATE ROLE haven_api LOGIN PASSWORD '…' IN ROLE haven_app;
--   CREATE ROLE haven_worker LOGIN PASSWORD '…' IN ROLE haven_app;
--
-- Migrations need CREATE on the database, which haven_app does not have: run them with the owner's
-- URL (root `pnpm start` and a service started on its own migrate at start, so give those the
-- owner's DATABASE_URL, or migrate first with the owner and start the services as haven_app).
--
-- The audit sealer (worker) reads pg_stat_activity.backend_xid to find the transactions still open
-- in this database (services/worker/src/sealer.ts, horizonSql). PostgreSQL shows that column to
-- every role, so haven_app needs no pg_read_all_stats: do not grant it (it would also expose other
-- sessions' query texts).
--
-- The services never delete rows today. Erasure (DESIGN.md, not built yet) will need DELETE on the
-- case tables it erases from: grant it here, table by table, when it exists; never on audit tables.

DO $$
BEGIN
  CREATE ROLE haven_app NOLOGIN;
EXCEPTION
  -- Roles belong to the whole server: another database (or a concurrent run) may have made it.
  WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO haven_app', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO haven_app;

-- Case data, users, tokens, outbox, notifications: read, add and change; never delete or truncate.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM haven_app;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO haven_app;

-- The audit trail: append and read, nothing else.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events, audit_seals, audit_checkpoints FROM haven_app;

-- Sequences behind defaults (referral references) and identity columns.
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO haven_app;
