/**
 * The API process: configuration, database, migrations, the bootstrap admin, then listen. On
 * SIGTERM or SIGINT it stops accepting connections, finishes requests in flight, then closes Redis
 * and the database.
 */
import { startApi } from './start.ts'
import { ConfigError } from './config.ts'

try {
  await startApi()
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`haven api: ${error.message}\n`)
    process.exit(1)
  }
  throw error
}
