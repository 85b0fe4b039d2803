CREATE TYPE "public"."notification_type" AS ENUM('share.created', 'share.accepted', 'share.declined', 'share.withdrawn', 'share.closed', 'share.expired', 'share.reminder', 'referral.closed', 'webhook.disabled');--> statement-breakpoint
DROP INDEX "outbox_unrelayed_idx";--> statement-breakpoint
ALTER TABLE "notifications" ALTER COLUMN "type" SET DATA TYPE "public"."notification_type" USING "type"::text::"public"."notification_type";--> statement-breakpoint
ALTER TABLE "notifications" ALTER COLUMN "referral_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "notifications" ALTER COLUMN "reference" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "outbox" ADD COLUMN "processed_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ADD COLUMN "generation" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
CREATE INDEX "outbox_unprocessed_idx" ON "outbox" USING btree ("seq") WHERE processed_at is null;--> statement-breakpoint
-- Wakes the outbox relay as soon as a transaction that wrote outbox rows commits (NOTIFY is
-- delivered at commit), so an idle system relays in milliseconds rather than at the next poll.
CREATE FUNCTION haven_notify_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('haven_outbox', '');
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
  FOR EACH STATEMENT EXECUTE FUNCTION haven_notify_outbox();
