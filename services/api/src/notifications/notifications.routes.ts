import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Db } from '@haven/schema'

/** In-app notifications (issue 5). */
export const notificationRoutes: FastifyPluginAsyncTypebox<{ db: Db }> = async () => {}
