/**
 * The worker's process skeleton: its connections and an orderly shutdown. Job processors (outbox
 * relay, notifications, reminders, the audit sealer) plug in here as they are built.
 */
import { type Database, openDatabase } from '@haven/schema'
import { Redis } from 'ioredis'
import { pino, type Logger } from 'pino'
import type { WorkerConfig } from './config.ts'

export interface RunningWorker {
  redis: Redis
  log: Logger
  close: () => Promise<void>
}

/**
 * Starts the worker. With `database` given (root `pnpm start` shares its embedded database with the
 * API), the caller owns and closes it.
 */
export async function startWorker (config: WorkerConfig, options: { database?: Database, log?: Logger } = {}): Promise<RunningWorker> {
  const log = options.log ?? pino({ name: 'haven-worker', level: config.logLevel })
  const database = options.database ?? await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir })
  // BullMQ workers need maxRetriesPerRequest: null; the client reconnects forever while Redis is away.
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null, retryStrategy: (attempt) => Math.min(attempt * 500, 5000) })
  let redisDown = false
  redis.on('error', (error: Error & { code?: string }) => {
    if (!redisDown) log.warn({ code: error.code }, 'Redis is unreachable: notifications wait in the outbox until it is back')
    redisDown = true
  })
  redis.on('ready', () => {
    log.info(redisDown ? 'Redis is reachable again' : 'worker connected to Redis')
    redisDown = false
  })
  log.info({ database: database.kind }, 'worker started')
  return {
    redis,
    log,
    close: async () => {
      await redis.quit().catch(() => { redis.disconnect() })
      if (options.database === undefined) await database.close()
      log.info('worker stopped')
    }
  }
}
