/**
 * What `pnpm bench` (run.ts) and `pnpm bench:scale` (scale.ts) share: a throwaway database, the API
 * and the worker as separate production processes, bulk seeding in SQL, the capture of the SQL one
 * request sends (turned into a pgbench script), and autocannon and pgbench at the same concurrency,
 * with progress on the terminal; and, for every bench, the clean-up after Ctrl-C.
 *
 * The pgbench side of each scenario is never written by hand: the request is made once through the
 * app's own code (buildApp on a database whose `onQuery` hook records every statement with its
 * parameters), twice with two different records, and each parameter becomes
 * - a pool expression when it is the id of the record the request was about (pgbench picks the record
 *   the same way autocannon does: ids are a function of a number, see `poolId`),
 * - a fresh value per transaction when it differs between the two captures and is a UUID the app
 *   generated (a new referral's id, the request id),
 * - a constant otherwise (passed with `-D`, so it reaches PostgreSQL as a parameter, as from the API).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import autocannon from 'autocannon'
import postgres from 'postgres'

export const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const repoRoot = new URL('../', import.meta.url)

// --- terminal ------------------------------------------------------------------------------------

const live = process.stderr.isTTY
let statusShown = false
/** A line of output, above the progress line when there is one. */
export function say (line: string) {
  if (statusShown) process.stderr.write('\r\u001b[2K')
  statusShown = false
  process.stderr.write(`${line}\n`)
}
let lastQuietStatus = 0
/** The progress line: redrawn in place on a terminal, every 5 seconds otherwise. */
export function status (line: string) {
  if (live) {
    process.stderr.write(`\r\u001b[2K${line}`)
    statusShown = true
  } else if (Date.now() - lastQuietStatus >= 5000) {
    lastQuietStatus = Date.now()
    process.stderr.write(`${line}\n`)
  }
}

// --- interruption --------------------------------------------------------------------------------

const undoStack: (() => unknown)[] = []
let listening = false
let interrupted: Promise<never> | undefined
let interruptedAt = 0
const exitCodeOf = (signal: NodeJS.Signals) => signal === 'SIGINT' ? 130 : 143

/**
 * Ctrl-C (SIGINT) or SIGTERM: undo, in reverse order, what `undoOnInterrupt` was given, then exit
 * (130, 143). The run itself is not waited for: dropping its database ends its queries, and a seeding
 * of millions of rows could otherwise go on for minutes. Without this, Node exits at once and leaves
 * the run's database, perhaps gigabytes of it, on the machine's shared PostgreSQL. The benches run
 * under `node --import tsx`, not the tsx command, which SIGKILLs a child slow to take a Ctrl-C.
 * A signal a second or more after the first quits at once. Once interrupted, a promise the run
 * leaves rejected (a query the drop ended) is no fault and does not end the process before the
 * clean-up does. (bench:notifications stops its run at its next step instead, see there: its
 * worker runs in the bench's process by default, and going on beside the clean-up it would refill
 * the queues the clean-up removed.)
 */
function onSignal (signal: NodeJS.Signals) {
  if (interrupted !== undefined) {
    if (Date.now() - interruptedAt > 1000) {
      say(`${signal}: quitting without cleaning up`)
      process.exit(exitCodeOf(signal))
    }
    return
  }
  interruptedAt = Date.now()
  process.on('unhandledRejection', () => {})
  say(`${signal}: cleaning up (send it again to quit at once)…`)
  interrupted = (async () => {
    for (const undo of undoStack.splice(0).reverse()) {
      try {
        await undo()
      } catch (error) {
        say(`cleanup: ${String(error)}`)
      }
    }
    process.exit(exitCodeOf(signal))
  })()
}

/**
 * Adds `undo` to what an interruption undoes; `cancel()` takes it off once the run has undone it
 * itself (an interruption during the run's own clean-up runs `undo` beside it: it must bear that).
 */
export function undoOnInterrupt (undo: () => unknown): { cancel: () => void } {
  if (!listening) {
    listening = true
    process.on('SIGINT', onSignal)
    process.on('SIGTERM', onSignal)
  }
  undoStack.push(undo)
  return {
    cancel: () => {
      const at = undoStack.indexOf(undo)
      if (at >= 0) undoStack.splice(at, 1)
    }
  }
}

/** Runs a bench's `main`; once interrupted, its failure (its database gone) is no fault: the clean-up exits. */
export async function runBench (main: () => Promise<void>): Promise<void> {
  try {
    await main()
  } catch (error) {
    if (interrupted === undefined) throw error
  }
  if (interrupted !== undefined) await interrupted
}

export const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits
export const fmt = (n: number) => Math.round(n).toLocaleString('en-GB')

/** The p-th percentile (0..1) of values, nearest rank. */
export function percentile (values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return 0
  const sorted = Float64Array.from(values).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? 0
}

export function table (header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((row) => row.map(String))]
  const widths = header.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)))
  const line = (row: string[]) => row.map((cell, i) => i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)).join('  ')
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n')
}

// --- database ------------------------------------------------------------------------------------

const benchApplicationName = 'haven-bench'

export interface BenchDatabase {
  name: string
  url: string
  /** A superuser connection to the bench database, for seeding and statistics. */
  sql: postgres.Sql
  drop: () => Promise<void>
}

export async function createDatabase (prefix: string): Promise<BenchDatabase> {
  const name = `${prefix}_${Date.now()}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  // Named, so the backend CPU sampler leaves the bench's own connections out.
  const sql = postgres(url.toString(), { max: 2, onnotice: () => {}, connection: { application_name: benchApplicationName } })
  return {
    name,
    url: url.toString(),
    sql,
    drop: async () => {
      await sql.end({ timeout: 5 })
      if (process.env.BENCH_KEEP_DB === undefined) await admin.unsafe(`drop database if exists "${name}" with (force)`)
      await admin.end({ timeout: 5 })
    }
  }
}

// --- production processes ------------------------------------------------------------------------

const pem = (key: { export: (options: { type: 'pkcs8' | 'spki', format: 'pem' }) => string | Buffer }, type: 'pkcs8' | 'spki') => key.export({ type, format: 'pem' }).toString()

/** Every secret a production API and worker need, made for this run only. */
export function productionSecrets () {
  const jwt = generateKeyPairSync('ed25519')
  const audit = generateKeyPairSync('ed25519')
  return {
    HAVEN_JWT_PRIVATE_KEY: pem(jwt.privateKey, 'pkcs8'),
    HAVEN_AUDIT_SIGNING_KEY: pem(audit.privateKey, 'pkcs8'),
    HAVEN_AUDIT_PUBLIC_KEY: pem(audit.publicKey, 'spki'),
    HAVEN_BOOTSTRAP_ADMIN_EMAIL: 'bench-admin@example.org',
    HAVEN_BOOTSTRAP_ADMIN_PASSWORD: 'bench admin password 1'
  }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

export interface Service {
  name: string
  pid: number
  child: ChildProcess
  /** The end of what the process wrote, for an error message. */
  output: () => string
  stop: () => Promise<void>
}

/** The environment of a service: this one's, without any HAVEN_ setting the caller's shell may carry. */
function serviceEnv (env: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('HAVEN_') && key !== 'LOG_LEVEL'))
  return { ...base, ...env }
}

/** A package's `start` script, `node <flags> <bundle>`, split into its node flags and its module. */
export function startScript (packageDir: string): { flags: string[], entry: string } {
  const manifest = JSON.parse(readFileSync(new URL(`${packageDir}/package.json`, repoRoot), 'utf8')) as { scripts?: { start?: string } }
  const words = (manifest.scripts?.start ?? '').trim().split(/\s+/)
  const entry = words[words.length - 1]
  if (words[0] !== 'node' || entry === undefined || entry.startsWith('--')) throw new Error(`${packageDir}: the start script is not \`node <flags> <module>\``)
  return { flags: words.slice(1, -1), entry }
}

let built = false

/**
 * Starts what `pnpm --filter … start` runs — the service's bundle under the start script's node
 * flags — directly, so the pid is the service's own. Builds the bundles first, once per run, so
 * the benchmark measures the code as it is. Its output goes to a file in `dir`.
 */
export function startService (name: string, packageDir: string, env: Record<string, string>, dir: string, extraNodeArgs: string[] = []): Service {
  if (!built) {
    execFileSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts'], { cwd: new URL('.', repoRoot).pathname, stdio: ['ignore', 'ignore', 'inherit'] })
    built = true
  }
  const { flags, entry } = startScript(packageDir)
  const logFile = join(dir, `${name}.log`)
  const fd = openSync(logFile, 'w')
  const child = spawn(process.execPath, [...flags, ...extraNodeArgs, entry], {
    cwd: new URL(`${packageDir}/`, repoRoot).pathname, env: serviceEnv(env), stdio: ['ignore', fd, fd]
  })
  closeSync(fd)
  const exited = new Promise<number | null>((resolve) => { child.on('exit', (code) => { resolve(code) }) })
  const output = () => {
    try {
      return readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n')
    } catch {
      return ''
    }
  }
  return {
    name,
    pid: child.pid ?? 0,
    child,
    output,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(() => { child.kill('SIGKILL') }, 15_000)
      await exited
      clearTimeout(timer)
    }
  }
}

/** Polls `url` until it answers 200, for at most `ms`; fails early if the service exits. */
export async function waitUntilUp (service: Service, url: string, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    if (service.child.exitCode !== null) throw new Error(`${service.name} exited (${service.child.exitCode}):\n${service.output()}`)
    try {
      const response = await fetch(url)
      if (response.status === 200) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${service.name} did not come up at ${url}:\n${service.output()}`)
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

// --- /proc ---------------------------------------------------------------------------------------

/** Resident memory now and its peak (VmHWM) over the process's life, in MB. */
export function memoryOf (pid: number): { rssMb: number, peakMb: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0)
    return { rssMb: round(kb('VmRSS') / 1024, 1), peakMb: round(kb('VmHWM') / 1024, 1) }
  } catch {
    return { rssMb: 0, peakMb: 0 }
  }
}

/** CPU seconds (user + system) a process has used so far. */
export function cpuSecondsOf (pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/**
 * Busy CPU seconds of the whole machine so far, all cores together (user, nice, system, irq and
 * softirq from /proc/stat's first line; not steal, which other guests used): what the processes
 * counted one by one leave out is the kernel's own work and processes that have exited.
 */
export function machineCpuSeconds (): number {
  const [user, nice, system, , , irq, softirq] = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number)
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0)) / 100
}

/**
 * CPU seconds used by the PostgreSQL backends of the bench database while it runs: sampled every
 * 200 ms, so backends that connect during the phase (pgbench's) are counted from zero. A backend that
 * lives less than a sample apart is missed.
 */
export function backendCpuSampler (db: BenchDatabase) {
  const first = new Map<number, number>()
  const last = new Map<number, number>()
  let startedAt = 0
  const sample = async (initial: boolean) => {
    const rows = await db.sql<{ pid: number }[]>`select pid from pg_stat_activity where datname = ${db.name} and application_name <> ${benchApplicationName}`
    for (const { pid } of rows) {
      const seconds = cpuSecondsOf(pid)
      if (!first.has(pid)) first.set(pid, initial ? seconds : 0)
      last.set(pid, seconds)
    }
  }
  return {
    start: async () => { startedAt = performance.now(); await sample(true) },
    sample: async () => { await sample(false) },
    /** CPU seconds used since start. */
    total: () => [...last].reduce((sum, [pid, seconds]) => sum + seconds - (first.get(pid) ?? 0), 0),
    elapsed: () => (performance.now() - startedAt) / 1000
  }
}

// --- deterministic ids ---------------------------------------------------------------------------

/**
 * Seeded records have ids that are a function of a number, so pgbench can pick one with
 * `\set n random(…)` exactly as autocannon does: `<prefix><n as 12 hex digits>`.
 */
export const idPrefixes = {
  referral: '00000000-0000-4000-8000-',
  scopedShare: '00000000-0000-4000-9000-',
  pendingShare: '00000000-0000-4000-a000-'
} as const
export const poolId = (prefix: string, n: number) => `${prefix}${n.toString(16).padStart(12, '0')}`
/** The same id in SQL, from an integer expression. */
export const poolIdSql = (prefix: string, n: string) => `('${prefix}' || lpad(to_hex((${n})::bigint), 12, '0'))::uuid`

// --- seeding -------------------------------------------------------------------------------------

/**
 * `count` copies of a template referral made through the API, numbered `from`…, each with its pool
 * id and a reference outside the API's sequence (years 2000+); referral n was created n minutes ago.
 */
export async function cloneReferrals (db: BenchDatabase, templateId: string, from: number, count: number) {
  await db.sql.unsafe(`
    insert into referrals (id, reference, status, urgency, needs, age_group, consent_basis, summary, identity, contact, circumstances, consent,
                           origin_agency_id, created_by, version, created_at, updated_at)
    select ${poolIdSql(idPrefixes.referral, 'g')}, 'HVN-' || (2000 + g / 1000000) || '-' || lpad((g % 1000000)::text, 6, '0'),
           t.status, t.urgency, t.needs, t.age_group, t.consent_basis, t.summary, t.identity, t.contact, t.circumstances, t.consent,
           t.origin_agency_id, t.created_by, 1, now() - make_interval(mins => g), now() - make_interval(mins => g)
    from generate_series(${from}::int, ${from + count - 1}::int) g, (select * from referrals where id = $1) t`, [templateId])
}

/** Shares of referrals `from`…`from + count - 1` to one agency, share n on referral n. */
export async function seedShares (db: BenchDatabase, options: {
  prefix: string, from: number, count: number, agencyId: string, createdBy: string, status: 'pending' | 'accepted',
  scopes: string[], decidedBy?: string
}) {
  const decided = options.status === 'accepted'
  await db.sql.unsafe(`
    insert into shares (id, referral_id, agency_id, status, scopes, message, respond_by, created_by, decided_at, decided_by, created_at, updated_at)
    select ${poolIdSql(options.prefix, 'g')}, ${poolIdSql(idPrefixes.referral, 'g')}, $1, $2::share_status, $3::share_scope[], null,
           now() + interval '30 days', $4, ${decided ? 'now()' : 'null'}, $5, now(), now()
    from generate_series(${options.from}::int, ${options.from + options.count - 1}::int) g`,
  [options.agencyId, options.status, `{${options.scopes.join(',')}}`, options.createdBy, options.decidedBy ?? null])
}

/**
 * Audit events numbered `first`… (`count` of them), event g on referral 1 + g mod `referrals`, as
 * reads, lists and shares by the given actor, one second apart, in statements of at most 500,000.
 */
export async function seedAuditEvents (db: BenchDatabase, options: { first?: number, count: number, referrals: number, actorUserId: string, actorAgencyId: string }) {
  const batch = 500_000
  const first = options.first ?? 1
  for (let done = 0; done < options.count; done += batch) {
    const from = first + done
    const to = from + Math.min(batch, options.count - done) - 1
    await db.sql.unsafe(`
      insert into audit_events (occurred_at, actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id,
                                purpose, request_id, ip)
      select now() - make_interval(secs => 100000000 - g), $1, $2, '{referrer}',
             (array['referral.read', 'referral.list', 'referral.read', 'share.create', 'timeline.read']::audit_action[])[1 + g % 5], 'success',
             ${poolIdSql(idPrefixes.referral, `1 + g % ${options.referrals}`)}, 'referral', ${poolIdSql(idPrefixes.referral, `1 + g % ${options.referrals}`)},
             'case_management', gen_random_uuid()::text, '127.0.0.1'
      from generate_series(${from}::bigint, ${to}::bigint) g`, [options.actorUserId, options.actorAgencyId])
  }
}

// --- capture: the SQL of one request, as a pgbench script ----------------------------------------

export interface Statement { text: string, parameters: readonly unknown[] }

/** Records what the app sends while `work` runs (the capture app has a pool of one, so nothing interleaves). */
export class Recorder {
  private recording: Statement[] | null = null
  readonly onQuery = (text: string, parameters: readonly unknown[]) => { this.recording?.push({ text, parameters: [...parameters] }) }
  async record (work: () => Promise<void>): Promise<Statement[]> {
    const seen: Statement[] = []
    this.recording = seen
    try {
      await work()
    } finally {
      this.recording = null
    }
    // postgres.js reads the server's array types on a new connection: the driver's, not the request's.
    return seen.filter((statement) => !/^\s*select b\.oid, b\.typarray\s/.test(statement.text))
  }
}

/** How pgbench picks the record of each transaction; member n has the ids `poolId(prefix, n)` for each key. */
export type Pool =
  | { kind: 'random', from: number, to: number, ids: Record<string, string> }
  /** Each transaction takes the next unused record: client c's k-th transaction takes first + c * perClient + k. */
  | { kind: 'sequential', first: number, perClient: number, ids: Record<string, string> }

export interface PgbenchScript {
  script: string
  defines: Record<string, string>
  /** Statements per transaction, `begin` and `commit` included. */
  statements: number
  /** Parameters that differed between the two captures and were neither pool ids nor fresh ids: the first capture's value was used. */
  unexplained: string[]
}

const pgbenchMaxParameters = 200

/** A parameter as postgres.js sends it, as text. */
function parameterText (value: unknown): string | null {
  if (value === null || value === undefined) return null
  if (value instanceof Date) return value.toISOString()
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`
  if (Array.isArray(value)) {
    return `{${value.map((item) => {
      const text = parameterText(item)
      return text === null ? 'NULL' : `"${text.replace(/["\\]/g, (c) => `\\${c}`)}"`
    }).join(',')}}`
  }
  if (typeof value === 'boolean') return value ? 't' : 'f'
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value as string | number | bigint)
}

/** A string literal pgbench leaves alone: an E'' string with `:` and `\` escaped (pgbench would read `:name` as a variable). */
const safeLiteral = (text: string) => `E'${text.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/:/g, '\\x3a')}'`

/**
 * Rewrites a statement for pgbench: `$n` outside quotes becomes `replace(n)`, and each string literal
 * that contains a colon becomes a safe E'' literal of the same value.
 */
function rewriteStatement (text: string, replace: (n: number) => string): string {
  let out = ''
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === "'") {
      let j = i + 1
      let value = ''
      for (;;) {
        if (j >= text.length) throw new Error(`unterminated literal in ${text}`)
        if (text[j] === "'" && text[j + 1] === "'") { value += "'"; j += 2; continue }
        if (text[j] === "'") break
        value += text[j]
        j++
      }
      out += value.includes(':') || value.includes('\\') ? safeLiteral(value) : text.slice(i, j + 1)
      i = j + 1
    } else if (c === '"') {
      const j = text.indexOf('"', i + 1)
      out += text.slice(i, j + 1)
      i = j + 1
    } else if (c === '$' && /\d/.test(text[i + 1] ?? '')) {
      const digits = /^\d+/.exec(text.slice(i + 1))?.[0] ?? ''
      out += replace(Number(digits))
      i += 1 + digits.length
    } else {
      out += c
      i++
    }
  }
  return out
}

/**
 * A pgbench script of the statements of one request, from two captures of it about two records of
 * `pool` (members `a` and `b`; undefined for a request about no record). `describe` gives the type
 * PostgreSQL infers for each parameter of a statement (for casts of the expressions put in its place).
 */
export async function pgbenchScript (
  captures: [Statement[], Statement[]], pool: Pool | undefined, members: [number, number] | undefined,
  describe: (text: string) => Promise<string[]>
): Promise<PgbenchScript> {
  const [first, second] = captures
  if (first.length !== second.length || first.some((statement, i) => statement.text !== second[i]?.text)) {
    throw new Error(`the two captures sent different statements:\n${first.map((s) => s.text).join('\n')}\n---\n${second.map((s) => s.text).join('\n')}`)
  }
  const defines: Record<string, string> = {}
  const constants = new Map<string, string>()
  const fresh = new Map<string, string>()
  const unexplained: string[] = []
  const header: string[] = []
  if (pool?.kind === 'random') header.push(`\\set n random(${pool.from}, ${pool.to})`)
  if (pool?.kind === 'sequential') {
    defines.k = '0'
    defines.first = String(pool.first)
    defines.per_client = String(pool.perClient)
    header.push('\\set n :first + :client_id * :per_client + :k', '\\set k :k + 1')
  }
  const lines: string[] = []
  for (const [index, statement] of first.entries()) {
    const other = second[index]?.parameters ?? []
    const types = statement.parameters.length > 0 ? await describe(statement.text) : []
    const inline = statement.parameters.length > pgbenchMaxParameters
    /** The pgbench variable of a fresh UUID, the same for each occurrence of the value in the request. */
    const freshVariable = (value: string) => {
      let variable = fresh.get(value)
      if (variable === undefined) {
        variable = `f${fresh.size + 1}`
        fresh.set(value, variable)
        header.push(`\\set ${variable} random(1, 281474976710655)`)
      }
      return variable
    }
    /**
     * An SQL text expression for a value that differs between the captures: each UUID in it is a
     * pool id, a fresh id or a constant, and the rest must be the same in both. Undefined when the
     * difference is something else.
     */
    const varying = (a: string, b: string): string | undefined => {
      const split = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/i
      const partsA = a.split(split)
      const partsB = b.split(split)
      if (partsA.length !== partsB.length) return undefined
      const pieces: string[] = []
      for (const [i, part] of partsA.entries()) {
        const other = partsB[i] ?? ''
        if (i % 2 === 0 || part === other) {
          if (part !== other) return undefined
          if (part !== '') pieces.push(safeLiteral(part))
          continue
        }
        const key = pool !== undefined && members !== undefined
          ? Object.values(pool.ids).find((prefix) => part === poolId(prefix, members[0]) && other === poolId(prefix, members[1]))
          : undefined
        pieces.push(key !== undefined ? `${poolIdSql(key, ':n')}::text` : `('ffffffff-ffff-4fff-bfff-' || lpad(to_hex(:${freshVariable(part)}::bigint), 12, '0'))`)
      }
      return pieces.length === 1 ? pieces[0] : `(${pieces.join(' || ')})`
    }
    const text = rewriteStatement(statement.text, (n) => {
      const type = types[n - 1] ?? 'text'
      const a = parameterText(statement.parameters[n - 1])
      const b = parameterText(other[n - 1])
      if (a !== b && a !== null && b !== null) {
        const expression = varying(a, b)
        if (expression !== undefined) return `${expression}::${type}`
        unexplained.push(`statement ${index + 1} $${n}: ${a} / ${b}`)
      }
      if (a === null) return `NULL::${type}`
      if (inline) return `${safeLiteral(a)}::${type}`
      let variable = constants.get(a)
      if (variable === undefined) {
        variable = `c${constants.size + 1}`
        constants.set(a, variable)
        defines[variable] = a
      }
      return `:${variable}`
    })
    lines.push(`${text};`)
  }
  return { script: `${[...header, ...lines].join('\n')}\n`, defines, statements: first.length, unexplained }
}

/** The types PostgreSQL infers for a statement's parameters, by name (`uuid`, `audit_action[]`, …). */
export function describer (sql: postgres.Sql): (text: string) => Promise<string[]> {
  const names = new Map<number, string>()
  return async (text) => {
    const described = await sql.unsafe(text).describe()
    const oids = described.types as unknown as number[]
    const missing = oids.filter((oid) => !names.has(oid))
    if (missing.length > 0) {
      const rows = await sql<{ oid: number, name: string }[]>`select oid::int as oid, format_type(oid, null) as name from pg_type where oid = any(${missing}::oid[])`
      for (const row of rows) names.set(row.oid, row.name)
    }
    return oids.map((oid) => names.get(oid) ?? 'text')
  }
}

// --- load ----------------------------------------------------------------------------------------

export interface LoadResult {
  requests: number
  seconds: number
  perSecond: number
  p50: number
  p99: number
  /** Responses outside 2xx, and connection errors. */
  failed: number
  statusCodes: Record<string, number>
}

export interface HttpRequest { method: 'GET' | 'POST', path: string, body?: string }

/**
 * autocannon at `connections`, for `seconds` or `amount` requests; `next` builds each request.
 * Latencies are taken from each response (autocannon's own histogram rounds to whole milliseconds).
 */
export async function runHttp (options: {
  base: string, token: string, connections: number, seconds?: number, amount?: number, next: () => HttpRequest, progress: (line: string) => void
}): Promise<LoadResult> {
  const latencies: number[] = []
  const statusCodes: Record<string, number> = {}
  let failed = 0
  const started = performance.now()
  let finish: (result: autocannon.Result) => void = () => {}
  let fail: (error: unknown) => void = () => {}
  const done = new Promise<autocannon.Result>((resolve, reject) => { finish = resolve; fail = reject })
  const instance = autocannon({
    url: options.base,
    connections: options.connections,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.seconds ?? 10 }),
    requests: [{
      setupRequest: (request) => {
        const next = options.next()
        const headers = { authorization: `Bearer ${options.token}`, ...(next.body !== undefined ? { 'content-type': 'application/json' } : {}) }
        return { ...request, ...next, headers }
      }
    }]
  }, (error, result) => {
    if (error !== null && error !== undefined) fail(error)
    else finish(result)
  })
  instance.on('response', (_client, statusCode, _bytes, responseTime) => {
    statusCodes[statusCode] = (statusCodes[statusCode] ?? 0) + 1
    if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime)
    else failed++
  })
  instance.on('reqError', () => { failed++ })
  let seenAtLastTick = 0
  instance.on('tick', () => {
    const seen = latencies.length + failed
    const elapsed = (performance.now() - started) / 1000
    const target = options.amount !== undefined ? `${fmt(seen)}/${fmt(options.amount)} requests` : `${elapsed.toFixed(0)}/${options.seconds ?? 10} s`
    options.progress(`${target}, ${fmt(seen - seenAtLastTick)} req/s${failed > 0 ? `, ${failed} failed` : ''}`)
    seenAtLastTick = seen
  })
  const result = await done
  const seconds = result.duration
  return {
    requests: latencies.length,
    seconds: round(seconds),
    perSecond: Math.round(latencies.length / seconds),
    p50: round(percentile(latencies, 0.5)),
    p99: round(percentile(latencies, 0.99)),
    failed,
    statusCodes
  }
}

/** pgbench with `script` at `clients`, prepared statements, for `seconds` or `transactionsPerClient`. */
export async function runPgbench (options: {
  url: string, script: PgbenchScript, clients: number, seconds?: number, transactionsPerClient?: number, progress: (line: string) => void
}): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'haven-pgbench-'))
  try {
    const file = join(dir, 'script.sql')
    writeFileSync(file, options.script.script)
    const url = new URL(options.url)
    const args = [
      '-n', '-M', 'prepared', '-c', String(options.clients), '-j', String(Math.min(2, options.clients)), '-P', '1',
      '-l', `--log-prefix=${join(dir, 'tx')}`,
      ...(options.transactionsPerClient !== undefined ? ['-t', String(options.transactionsPerClient)] : ['-T', String(options.seconds ?? 10)]),
      ...Object.entries(options.script.defines).flatMap(([name, value]) => ['-D', `${name}=${value}`]),
      '-f', file, '-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username || 'postgres'), url.pathname.slice(1)
    ]
    const output = await new Promise<string>((resolve, reject) => {
      const child = spawn('pgbench', args, { env: { ...process.env, PGPASSWORD: decodeURIComponent(url.password) } })
      let text = ''
      const take = (chunk: Buffer) => {
        text += chunk.toString()
        const progress = [...chunk.toString().matchAll(/progress: ([\d.]+) s, ([\d.]+) tps, lat ([\d.]+) ms/g)].at(-1)
        if (progress !== undefined) options.progress(`${Number(progress[1]).toFixed(0)} s, ${fmt(Number(progress[2]))} tps, ${progress[3]} ms mean`)
      }
      child.stdout.on('data', take)
      child.stderr.on('data', take)
      child.on('error', reject)
      child.on('close', (code) => {
        if (code === 0) resolve(text)
        else reject(new Error(`pgbench exited ${code}:\n${text.slice(-3000)}\nscript:\n${options.script.script}`))
      })
    })
    const latencies: number[] = []
    for (const name of readdirSync(dir).filter((n) => n.startsWith('tx'))) {
      for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
        const micros = Number(line.split(' ')[2])
        if (line !== '' && Number.isFinite(micros)) latencies.push(micros / 1000)
      }
    }
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(output)?.[1] ?? 0)
    const failed = Number(/number of failed transactions: (\d+)/.exec(output)?.[1] ?? 0)
    const processed = Number(/number of transactions actually processed: (\d+)/.exec(output)?.[1] ?? latencies.length)
    return {
      requests: processed,
      seconds: round(processed / Math.max(tps, 1e-9)),
      perSecond: Math.round(tps),
      p50: round(percentile(latencies, 0.5)),
      p99: round(percentile(latencies, 0.99)),
      failed,
      statusCodes: {}
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

export interface Sampled<T> {
  result: T
  /** The highest resident memory seen of each process, in MB. */
  peakRssMb: Record<string, number>
  /** CPU used by each process while `work` ran, as a percentage of one core. */
  cpuPercent: Record<string, number>
  /** CPU used by the bench database's PostgreSQL backends, as a percentage of one core. */
  backendCpuPercent: number
}

/** Runs `work` while sampling the memory and CPU of the processes and the database's backends every 200 ms. */
export async function whileSampling<T> (pids: Record<string, number>, db: BenchDatabase, work: () => Promise<T>): Promise<Sampled<T>> {
  const peak: Record<string, number> = Object.fromEntries(Object.keys(pids).map((name) => [name, 0]))
  const cpuBefore = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSecondsOf(pid)]))
  const backends = backendCpuSampler(db)
  await backends.start()
  const sampleMemory = () => {
    for (const [name, pid] of Object.entries(pids)) peak[name] = Math.max(peak[name] ?? 0, memoryOf(pid).rssMb)
  }
  let sampling = Promise.resolve()
  const timer = setInterval(() => {
    sampleMemory()
    sampling = sampling.then(backends.sample).catch(() => {})
  }, 200)
  try {
    const result = await work()
    clearInterval(timer)
    await sampling
    await backends.sample()
    sampleMemory()
    const seconds = backends.elapsed()
    return {
      result,
      peakRssMb: peak,
      cpuPercent: Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, round(100 * (cpuSecondsOf(pid) - (cpuBefore[name] ?? 0)) / seconds, 0)])),
      backendCpuPercent: round(100 * backends.total() / seconds, 0)
    }
  } finally {
    clearInterval(timer)
  }
}
