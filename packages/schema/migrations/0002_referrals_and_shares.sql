CREATE TYPE "public"."age_group" AS ENUM('adult', 'child', 'unknown');--> statement-breakpoint
CREATE TYPE "public"."consent_basis" AS ENUM('consent', 'child_safeguarding', 'duty_to_notify');--> statement-breakpoint
CREATE TYPE "public"."note_visibility" AS ENUM('agency', 'shared');--> statement-breakpoint
CREATE TYPE "public"."referral_status" AS ENUM('open', 'closed');--> statement-breakpoint
CREATE TYPE "public"."share_outcome" AS ENUM('supported', 'no_further_action', 'referred_on', 'lost_contact', 'support_declined');--> statement-breakpoint
CREATE TYPE "public"."share_scope" AS ENUM('identity', 'contact', 'circumstances');--> statement-breakpoint
CREATE TYPE "public"."share_status" AS ENUM('pending', 'accepted', 'declined', 'withdrawn', 'expired', 'closed');--> statement-breakpoint
CREATE TYPE "public"."urgency" AS ENUM('immediate', 'high', 'standard');--> statement-breakpoint
ALTER TYPE "public"."audit_action" ADD VALUE 'user.list' BEFORE 'referral.create';--> statement-breakpoint
CREATE SEQUENCE "public"."referral_reference_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 999999 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "idempotency_keys" (
	"user_id" uuid NOT NULL,
	"key" text NOT NULL,
	"request_hash" text NOT NULL,
	"referral_id" uuid NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "idempotency_keys_user_id_key_pk" PRIMARY KEY("user_id","key")
);
--> statement-breakpoint
CREATE TABLE "notes" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"referral_id" uuid NOT NULL,
	"agency_id" uuid NOT NULL,
	"author_id" uuid NOT NULL,
	"body" text NOT NULL,
	"visibility" "note_visibility" NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "referrals" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"reference" text DEFAULT 'HVN-' || to_char(now() at time zone 'UTC', 'YYYY') || '-' || lpad(nextval('referral_reference_seq')::text, 6, '0') NOT NULL,
	"status" "referral_status" DEFAULT 'open' NOT NULL,
	"urgency" "urgency" NOT NULL,
	"needs" "agency_service"[] DEFAULT '{}' NOT NULL,
	"age_group" "age_group" NOT NULL,
	"consent_basis" "consent_basis" NOT NULL,
	"summary" jsonb NOT NULL,
	"identity" jsonb,
	"contact" jsonb,
	"circumstances" jsonb,
	"consent" jsonb NOT NULL,
	"origin_agency_id" uuid NOT NULL,
	"created_by" uuid NOT NULL,
	"version" integer DEFAULT 1 NOT NULL,
	"closed_outcome" "share_outcome",
	"closed_at" timestamp (3) with time zone,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "referrals_duty_to_notify_anonymous" CHECK ("referrals"."consent_basis" <> 'duty_to_notify' or ("referrals"."identity" is null and "referrals"."contact" is null))
);
--> statement-breakpoint
CREATE TABLE "shares" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"referral_id" uuid NOT NULL,
	"agency_id" uuid NOT NULL,
	"status" "share_status" DEFAULT 'pending' NOT NULL,
	"scopes" "share_scope"[] DEFAULT '{}' NOT NULL,
	"message" text,
	"respond_by" timestamp (3) with time zone NOT NULL,
	"created_by" uuid NOT NULL,
	"decided_at" timestamp (3) with time zone,
	"decided_by" uuid,
	"decline_reason" text,
	"outcome" "share_outcome",
	"reminded_at" timestamp (3) with time zone,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notes" ADD CONSTRAINT "notes_referral_id_referrals_id_fk" FOREIGN KEY ("referral_id") REFERENCES "public"."referrals"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notes" ADD CONSTRAINT "notes_agency_id_agencies_id_fk" FOREIGN KEY ("agency_id") REFERENCES "public"."agencies"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "notes" ADD CONSTRAINT "notes_author_id_users_id_fk" FOREIGN KEY ("author_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "referrals" ADD CONSTRAINT "referrals_origin_agency_id_agencies_id_fk" FOREIGN KEY ("origin_agency_id") REFERENCES "public"."agencies"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "referrals" ADD CONSTRAINT "referrals_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "shares" ADD CONSTRAINT "shares_referral_id_referrals_id_fk" FOREIGN KEY ("referral_id") REFERENCES "public"."referrals"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "shares" ADD CONSTRAINT "shares_agency_id_agencies_id_fk" FOREIGN KEY ("agency_id") REFERENCES "public"."agencies"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "shares" ADD CONSTRAINT "shares_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "shares" ADD CONSTRAINT "shares_decided_by_users_id_fk" FOREIGN KEY ("decided_by") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "notes_referral_idx" ON "notes" USING btree ("referral_id","created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "referrals_reference_idx" ON "referrals" USING btree ("reference");--> statement-breakpoint
CREATE INDEX "referrals_origin_idx" ON "referrals" USING btree ("origin_agency_id","created_at","id");--> statement-breakpoint
CREATE INDEX "shares_referral_idx" ON "shares" USING btree ("referral_id");--> statement-breakpoint
CREATE INDEX "shares_agency_idx" ON "shares" USING btree ("agency_id","status");--> statement-breakpoint
CREATE UNIQUE INDEX "shares_one_active_idx" ON "shares" USING btree ("referral_id","agency_id") WHERE status in ('pending', 'accepted');--> statement-breakpoint
CREATE INDEX "shares_pending_deadline_idx" ON "shares" USING btree ("respond_by") WHERE status = 'pending';