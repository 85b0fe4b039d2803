import type { FastifyBaseLogger } from 'fastify'
import { Redis } from 'ioredis'

/**
 * The API's Redis connection, used for readiness only: the API never waits on Redis, because work
 * for the worker goes through the outbox table. Commands fail fast while Redis is away, and the
 * client keeps reconnecting in the background.
 */
export const connectRedis = (url: string): Redis => new Redis(url, {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  retryStrategy: (attempt) => Math.min(attempt * 250, 5000)
})

/** Logs once when Redis goes away and once when it is back, instead of once per reconnect attempt. */
export function logRedisAvailability (redis: Redis, log: FastifyBaseLogger): void {
  let down = false
  redis.on('error', (error: Error & { code?: string }) => {
    if (down) return
    down = true
    log.warn({ code: error.code }, 'Redis is unreachable: the API keeps serving and notifications wait in the outbox until it is back')
  })
  redis.on('ready', () => {
    if (down) log.info('Redis is reachable again')
    down = false
  })
}
