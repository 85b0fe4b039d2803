CREATE TYPE "public"."agency_kind" AS ENUM('police', 'local_authority', 'ngo', 'health', 'competent_authority', 'helpline', 'other');--> statement-breakpoint
CREATE TYPE "public"."agency_service" AS ENUM('accommodation', 'medical', 'legal', 'interpreter', 'financial', 'mental_health', 'safety_planning', 'other');--> statement-breakpoint
CREATE TYPE "public"."agency_status" AS ENUM('active', 'suspended');--> statement-breakpoint
CREATE TYPE "public"."audit_action" AS ENUM('auth.login', 'auth.login_failed', 'auth.refresh', 'auth.logout', 'auth.token_reuse', 'agency.create', 'agency.update', 'user.create', 'user.update', 'referral.create', 'referral.read', 'referral.list', 'referral.update', 'referral.close', 'share.create', 'share.accept', 'share.decline', 'share.withdraw', 'share.close', 'share.expire', 'note.create', 'timeline.read', 'webhook.create', 'webhook.delete', 'audit.query', 'audit.export', 'audit.verify');--> statement-breakpoint
CREATE TYPE "public"."audit_outcome" AS ENUM('success', 'denied', 'error');--> statement-breakpoint
CREATE TYPE "public"."audit_target_type" AS ENUM('user', 'agency', 'referral', 'share', 'note', 'webhook', 'audit', 'session');--> statement-breakpoint
CREATE TYPE "public"."purpose" AS ENUM('case_management', 'safeguarding_emergency', 'investigation', 'service_delivery', 'audit');--> statement-breakpoint
CREATE TYPE "public"."role" AS ENUM('platform_admin', 'platform_auditor', 'agency_admin', 'auditor', 'referrer', 'caseworker');--> statement-breakpoint
CREATE TYPE "public"."user_status" AS ENUM('active', 'suspended');--> statement-breakpoint
CREATE TABLE "agencies" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"name" text NOT NULL,
	"kind" "agency_kind" NOT NULL,
	"region" text NOT NULL,
	"contact_email" text NOT NULL,
	"services" "agency_service"[] DEFAULT '{}' NOT NULL,
	"accepts_referrals" boolean DEFAULT true NOT NULL,
	"status" "agency_status" DEFAULT 'active' NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "audit_events" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "audit_events_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"xid" "xid8" DEFAULT pg_current_xact_id() NOT NULL,
	"occurred_at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor_user_id" uuid,
	"actor_agency_id" uuid,
	"actor_roles" "role"[] DEFAULT '{}' NOT NULL,
	"action" "audit_action" NOT NULL,
	"outcome" "audit_outcome" NOT NULL,
	"referral_id" uuid,
	"target_type" "audit_target_type",
	"target_id" uuid,
	"recipient_agency_id" uuid,
	"purpose" "purpose" DEFAULT 'case_management' NOT NULL,
	"request_id" text,
	"ip" text
);
--> statement-breakpoint
CREATE TABLE "outbox" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "outbox_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"type" text NOT NULL,
	"payload" jsonb NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"relayed_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "refresh_tokens" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"family_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"token_hash" text NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	"spent_at" timestamp with time zone,
	"revoked_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"agency_id" uuid NOT NULL,
	"email" text NOT NULL,
	"name" text NOT NULL,
	"roles" "role"[] NOT NULL,
	"status" "user_status" DEFAULT 'active' NOT NULL,
	"password_hash" text NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "refresh_tokens" ADD CONSTRAINT "refresh_tokens_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "users" ADD CONSTRAINT "users_agency_id_agencies_id_fk" FOREIGN KEY ("agency_id") REFERENCES "public"."agencies"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "agencies_name_idx" ON "agencies" USING btree ("name","id");--> statement-breakpoint
CREATE UNIQUE INDEX "audit_events_seq_idx" ON "audit_events" USING btree ("seq");--> statement-breakpoint
CREATE INDEX "audit_events_referral_idx" ON "audit_events" USING btree ("referral_id","seq");--> statement-breakpoint
CREATE INDEX "audit_events_login_failed_target_idx" ON "audit_events" USING btree ("target_id","occurred_at") WHERE action = 'auth.login_failed';--> statement-breakpoint
CREATE INDEX "audit_events_login_failed_ip_idx" ON "audit_events" USING btree ("ip","occurred_at") WHERE action = 'auth.login_failed';--> statement-breakpoint
CREATE INDEX "outbox_unrelayed_idx" ON "outbox" USING btree ("seq") WHERE relayed_at is null;--> statement-breakpoint
CREATE UNIQUE INDEX "refresh_tokens_hash_idx" ON "refresh_tokens" USING btree ("token_hash");--> statement-breakpoint
CREATE INDEX "refresh_tokens_family_idx" ON "refresh_tokens" USING btree ("family_id");--> statement-breakpoint
CREATE UNIQUE INDEX "users_email_lower_idx" ON "users" USING btree (lower("email"));--> statement-breakpoint
CREATE INDEX "users_agency_idx" ON "users" USING btree ("agency_id","created_at","id");