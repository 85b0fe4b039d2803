import { Health, Readiness, type Database, sql } from '@haven/schema'
import type { FastifyPluginAsync } from 'fastify'
import type { Redis } from 'ioredis'

/** Resolves true when `check` answers within `ms`, false when it fails or hangs. */
async function answers (check: () => Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => { resolve(false) }, ms) })
  try {
    return await Promise.race([check().then(() => true, () => false), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Resolves when the client is (again) ready; rejects when it gives up or after `ms`. */
async function redisReady (redis: Redis, ms: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const done = (error?: Error) => {
      clearTimeout(timer)
      redis.off('ready', ready)
      redis.off('end', ended)
      if (error === undefined) resolve(); else reject(error)
    }
    const ready = () => { done() }
    const ended = () => { done(new Error('Redis connection ended')) }
    const timer = setTimeout(() => { done(new Error('Redis is not connected')) }, ms)
    redis.once('ready', ready)
    redis.once('end', ended)
  })
}

/**
 * Pings Redis within `ms`. The API's client has no offline queue (no request may wait for Redis),
 * so a ping sent while the client is connecting or reconnecting — just after start, or while a
 * dropped connection is being replaced — fails at once. Such a failure waits for the connection
 * within the deadline and pings again, instead of answering "down" for a Redis that is up.
 */
async function pingRedis (redis: Redis, ms: number): Promise<unknown> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await redis.ping()
    } catch (error) {
      if (redis.status === 'end' || Date.now() >= deadline) throw error
      await redisReady(redis, deadline - Date.now())
    }
  }
}

export const healthRoutes: FastifyPluginAsync<{ database: Database, redis: Redis }> = async (app, { database, redis }) => {
  const probe = { config: { rateLimit: false }, logLevel: 'warn' } as const
  app.get('/healthz', {
    ...probe,
    schema: { tags: ['operations'], summary: 'Liveness', response: { 200: Health } }
  }, async () => ({ status: 'ok' as const }))

  app.get('/readyz', {
    ...probe,
    schema: { tags: ['operations'], summary: 'Readiness: PostgreSQL and Redis', response: { 200: Readiness, 503: Readiness } }
  }, async (_request, reply) => {
    const [databaseUp, redisUp] = await Promise.all([
      answers(() => database.rows(sql`select 1`), 2000),
      answers(() => pingRedis(redis, 1000), 1000)
    ])
    const ready = databaseUp && redisUp
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ok' : 'unavailable',
      database: databaseUp ? 'up' : 'down',
      redis: redisUp ? 'up' : 'down'
    })
  })
}
