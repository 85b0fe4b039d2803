import { type Database, openDatabase } from '@haven/schema'
import closeWithGrace from 'close-with-grace'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.ts'
import { bootstrapAdmin } from './bootstrap.ts'
import { type ApiConfig, loadConfig } from './config.ts'
import { loadSigningKeys } from './keys.ts'
import { connectRedis } from './redis.ts'

export interface RunningApi {
  app: FastifyInstance
  close: () => Promise<void>
}

/**
 * Starts the API. With `database` given (root `pnpm start`, where API and worker share one
 * embedded database), the caller owns it and closes it; otherwise the API opens its own.
 */
export async function startApi (options: { config?: ApiConfig, database?: Database, handleSignals?: boolean } = {}): Promise<RunningApi> {
  const config = options.config ?? loadConfig()
  const keys = loadSigningKeys(config)
  const database = options.database ?? await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, applicationName: 'haven-api' })
  if (options.database === undefined) await database.migrate()
  const result = await bootstrapAdmin(database, config)
  if (result.created && result.generatedPassword !== undefined) {
    // Printed once, to the terminal only: never to the log stream.
    process.stdout.write(`\nHaven created the first platform admin.\n  email:    ${result.email}\n  password: ${result.generatedPassword}\nSign in and create a real admin; this password is not shown again.\n\n`)
  }
  const redis = connectRedis(config.redisUrl)
  const app = await buildApp({ config, database, redis, keys })
  await app.listen({ port: config.port, host: config.host })
  const close = async () => {
    await app.close()
    redis.disconnect()
    if (options.database === undefined) await database.close()
  }
  if (options.handleSignals !== false) {
    closeWithGrace({ delay: 10_000 }, async ({ err }) => {
      if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
      await close()
    })
  }
  return { app, close }
}
