-- The audit trail is append-only for every role, the table owner included: rows can be added and
-- read, never changed or removed. Row triggers do not fire on TRUNCATE, hence the statement trigger.
-- A superuser can still disable triggers; the sealer's hash chain and signed checkpoints exist
-- to catch that.
CREATE FUNCTION haven_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit events are append-only: % refused on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END;
$$;
--> statement-breakpoint
CREATE TRIGGER audit_events_no_update_delete
  BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION haven_refuse_audit_change();
--> statement-breakpoint
CREATE TRIGGER audit_events_no_truncate
  BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION haven_refuse_audit_change();
