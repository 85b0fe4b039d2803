/** The worker process. SIGTERM or SIGINT: finish or release work in flight, then close connections. */
import closeWithGrace from 'close-with-grace'
import { loadWorkerConfig, WorkerConfigError } from './config.ts'
import { startWorker } from './worker.ts'

try {
  const config = loadWorkerConfig()
  if (config.databaseUrl === undefined) {
    // The embedded database belongs to one process: root `pnpm start` runs the API and worker together on it.
    throw new WorkerConfigError('DATABASE_URL is required to run the worker on its own (root `pnpm start` runs API and worker together on the embedded database)')
  }
  const worker = await startWorker(config)
  closeWithGrace({ delay: 10_000 }, async ({ err }) => {
    if (err !== undefined) worker.log.error({ err }, 'shutting down after an error')
    await worker.close()
  })
} catch (error) {
  if (error instanceof WorkerConfigError) {
    process.stderr.write(`haven worker: ${error.message}\n`)
    process.exit(1)
  }
  throw error
}
