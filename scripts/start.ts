/**
 * Root `pnpm start`: migrations, then the API and the worker in one process. With no DATABASE_URL
 * both use one embedded PGlite database under HAVEN_DATA_DIR (PGlite is a single in-process
 * connection, which is why they share a process here; production runs them separately).
 */
import { ConfigError, loadConfig, startApi } from '@haven/api'
import { loadWorkerConfig, startWorker, WorkerConfigError } from '@haven/worker'
import { openDatabase } from '@haven/schema'
import closeWithGrace from 'close-with-grace'

try {
  const config = loadConfig()
  const workerConfig = loadWorkerConfig()
  // One process, one pool for both services (HAVEN_WORKER_DB_CONNECTIONS does not apply here).
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, applicationName: 'haven' })
  await database.migrate()
  const api = await startApi({ config, database, handleSignals: false })
  const worker = await startWorker(workerConfig, { database })
  if (database.kind === 'pglite') api.app.log.info({ dataDir: config.dataDir }, 'using the embedded PGlite database (set DATABASE_URL for PostgreSQL)')
  closeWithGrace({ delay: 10_000 }, async ({ err }) => {
    if (err !== undefined) api.app.log.error({ err }, 'shutting down after an error')
    await api.close()
    await worker.close()
    await database.close()
  })
} catch (error) {
  if (error instanceof ConfigError || error instanceof WorkerConfigError) {
    process.stderr.write(`haven: ${error.message}\n`)
    process.exit(1)
  }
  throw error
}
