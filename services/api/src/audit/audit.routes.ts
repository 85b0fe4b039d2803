import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Database } from '@haven/schema'
import type { ApiConfig } from '../config.ts'

/** The auditors' API (issue 4): events, export, verify, the latest checkpoint, per-referral access log. */
export const auditRoutes: FastifyPluginAsyncTypebox<{ database: Database, config: ApiConfig }> = async () => {}
