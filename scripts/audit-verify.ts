/**
 * Root `pnpm audit:verify`: recomputes the audit chain and checks it against the signed checkpoints
 * in the database and in the file sink, like GET /v1/audit/verify, from the command line (for an
 * operator, a cron job or an external auditor with database access).
 *
 * Reads the same variables as the services: DATABASE_URL (else the embedded database under
 * HAVEN_DATA_DIR, which `pnpm start` must not be holding open), HAVEN_AUDIT_PUBLIC_KEY (one or
 * more PEM public keys, several during a key rotation; else, outside production, the worker's key
 * in the data dir) and HAVEN_CHECKPOINT_FILE. The run is
 * itself recorded in the trail (audit.verify, no actor). `--json` prints the result as JSON.
 * `--every-signature` also checks the signature of every line of the file sink, not only the last.
 *
 * Exit status: 0 the chain matches; 1 a mismatch (the first one is named); 2 it could not run.
 */
import { join } from 'node:path'
import { KeyConfigError, openDatabase, readEd25519PublicKeys, verifyAuditChain, writeAuditEvent } from '@haven/schema'

const env = process.env
const text = (name: string) => { const value = env[name]?.trim(); return value === undefined || value === '' ? undefined : value }
const nodeEnv = (text('NODE_ENV') ?? 'development') as 'production' | 'development' | 'test'
const dataDir = text('HAVEN_DATA_DIR') ?? '.haven'
const checkpointFile = text('HAVEN_CHECKPOINT_FILE') ?? `${dataDir}/audit-checkpoints.ndjson`
const asJson = process.argv.includes('--json')
const everyFileSignature = process.argv.includes('--every-signature')

function fail (message: string): never {
  process.stderr.write(`audit:verify: ${message}\n`)
  process.exit(2)
}

let publicKey
try {
  publicKey = readEd25519PublicKeys({ pem: text('HAVEN_AUDIT_PUBLIC_KEY'), variable: 'HAVEN_AUDIT_PUBLIC_KEY', file: join(dataDir, 'audit-ed25519.pem'), env: nodeEnv })
} catch (error) {
  fail(error instanceof KeyConfigError ? error.message : String(error))
}
if ((publicKey === undefined || publicKey.length === 0) && nodeEnv === 'production') fail('HAVEN_AUDIT_PUBLIC_KEY is required when NODE_ENV=production')

const database = await openDatabase({ url: text('DATABASE_URL'), dataDir, max: 2 }).catch((error: unknown) => fail(`cannot open the database: ${String(error)}`))
let status = 2
try {
  await writeAuditEvent(database.db, { actor: { userId: null, agencyId: null, roles: [] }, requestId: 'cli:audit-verify', ip: null, purpose: 'audit' },
    { action: 'audit.verify', outcome: 'success', target: { type: 'audit', id: null } })
  const started = performance.now()
  const result = await verifyAuditChain(database.db, { publicKey, checkpointFile, everyFileSignature })
  const seconds = (performance.now() - started) / 1000
  if (asJson) {
    process.stdout.write(`${JSON.stringify(result)}\n`)
  } else {
    const summary = (c: { size: number, signedAt: string } | null) => c === null ? 'none' : `size ${c.size}, signed ${c.signedAt}`
    process.stdout.write([
      `audit chain: ${result.ok ? 'OK' : 'MISMATCH'}`,
      `  events checked:        ${result.checked} in ${seconds.toFixed(2)} s`,
      `  sealed through:        position ${result.sealedThrough}`,
      `  database checkpoint:   ${summary(result.checkpoints.database)}`,
      `  file sink checkpoint:  ${summary(result.checkpoints.file)} (${checkpointFile})`,
      ...(publicKey === undefined || publicKey.length === 0 ? ['  public key:            none configured (signatures not checked)'] : []),
      ...(result.firstMismatch !== null
        ? [
            `  first mismatch:        ${result.firstMismatch.reason}`,
            `    position:            ${result.firstMismatch.position ?? '-'}`,
            `    event:               ${result.firstMismatch.eventId ?? '-'}`,
            `    ${result.firstMismatch.detail}`
          ]
        : []),
      ''
    ].join('\n'))
  }
  status = result.ok ? 0 : 1
} catch (error) {
  process.stderr.write(`audit:verify: ${error instanceof Error ? error.message : String(error)}\n`)
} finally {
  await database.close()
}
process.exit(status)
