ALTER TYPE "public"."audit_action" ADD VALUE 'webhook.list';--> statement-breakpoint
ALTER TYPE "public"."audit_action" ADD VALUE 'delivery.list';--> statement-breakpoint
ALTER TYPE "public"."audit_action" ADD VALUE 'delivery.retry';