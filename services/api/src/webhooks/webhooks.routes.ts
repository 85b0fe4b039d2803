import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Db } from '@haven/schema'
import type { ApiConfig } from '../config.ts'

/** Webhook registration and deliveries (issue 5). */
export const webhookRoutes: FastifyPluginAsyncTypebox<{ db: Db, config: ApiConfig }> = async () => {}
