CREATE INDEX "audit_events_actor_agency_idx" ON "audit_events" USING btree ("actor_agency_id","seq");--> statement-breakpoint
CREATE INDEX "audit_events_actor_user_idx" ON "audit_events" USING btree ("actor_user_id","seq");--> statement-breakpoint
CREATE INDEX "audit_events_occurred_at_idx" ON "audit_events" USING brin ("occurred_at");