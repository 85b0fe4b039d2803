/**
 * The audit sealer: chains audit events with SHA-256 in commit order, in the background, and signs
 * checkpoints of the chain (@haven/schema audit-chain.ts has the definitions).
 *
 * It is a loop over the database, not a BullMQ job: the audit trail must keep being sealed while
 * Redis is down (Redis only carries notifications), and a database advisory lock already gives
 * what a queue would: exactly one sealer at a time across any number of worker processes.
 *
 * Commit order. Events get their sequence number at insert but commit in another order, so "seal
 * everything above the last sealed seq" would skip an event whose transaction commits late. Each
 * event records its transaction id (`xid`); the sealer only takes events whose xid is below a
 * horizon such that every transaction below it that could write to this database has ended, and
 * any transaction that gets an xid later gets a larger one, so no event can ever appear below the
 * horizon after the sealer has passed it. Below the horizon it seals in (xid, seq) order, which is
 * therefore final. `horizonSql` says how the horizon is found.
 *
 * Priority. In the worker, sealing gives way to notification work in hand (`yieldTo`), for
 * `maxYieldMs` at most after its last pass: a person waits on a notification, while the seal only
 * has to keep its lag within a budget.
 */
import { mkdir, open } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import {
  type Checkpoint, checkpointLine, chainHash, type Database, type Db, eventHashSql, genesisHash, loadOrCreateEd25519Key, rowsOf, signCheckpoint, sql
} from '@haven/schema'
import type { KeyObject } from 'node:crypto'
import type { Logger } from 'pino'
import type { WorkerConfig } from './config.ts'

/** pg_try_advisory_xact_lock key of the sealer ("HaSe"); the migration lock is another. */
export const sealerLockKey = 0x4861_5365

export interface SealPolicy {
  /** Events sealed per transaction. */
  batchSize: number
  /** Sign a checkpoint once this many events were sealed since the last one… */
  checkpointEveryEvents: number
  /** …or this many seconds passed since it, whichever comes first (only when the chain grew). */
  checkpointIntervalSeconds: number
}

export interface SealBatch {
  sealed: number
  /** Another sealer held the lock: nothing was done. */
  busy: boolean
  /** A checkpoint signed in this batch, to append to the file sink once committed. */
  checkpoint: Checkpoint | null
}

/** The last sealed event is gone from the trail: sealing on would build on a tampered chain. */
export class SealerHaltedError extends Error {}

interface HeadRow { position: string, chain_hash: string, xid: string | null, seq: string | null }
interface LatestCheckpointRow { size: string, signed_at_ms: string }

/**
 * The commit-order horizon, for this database only.
 *
 * `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction running, is cluster-wide: a
 * transaction left open in any other database on the server (another service, a test run, a
 * pgbench) held sealing back for as long as it stayed open, though it can never write here. So the
 * horizon is the oldest transaction of the statement's snapshot that belongs to a session of THIS
 * database, or the snapshot's xmax when there is none:
 *
 *   H = least(xmax(S), min{ x in xip(S) : x is the backend_xid of a session of this database })
 *
 * S is the statement's snapshot, taken before the statement runs (t0); pg_stat_activity is read
 * while it runs (t1 >= t0; its backend list is taken at the first read in a transaction, and this
 * is the only one in the sealer's). Why no event below H can commit after the sealer has passed:
 * - an xid assigned after t0 is at least xmax(S), so at least H;
 * - an xid x < xmax(S) was assigned before t0, so its transaction had ended at t0 (its commit is
 *   visible to the sealer's next statement) or is in xip(S). It wrote to this database, so its
 *   session is connected to this database (a session never changes database). If it was still
 *   running at t1, pg_stat_activity showed x as that session's backend_xid, so H <= x. Otherwise it
 *   ended between t0 and t1, before the snapshot of the statement that reads the events.
 * backend_xid is a 32-bit xid; it is matched to the 64-bit xids of xip(S) by their low 32 bits,
 * which are unique among running transactions (they span less than 2^31).
 *
 * Prepared transactions (two-phase commit) keep their xid without a session, so pg_stat_activity
 * does not show them. PostgreSQL's default max_prepared_transactions = 0 rules them out and Haven
 * never prepares one; if a server allows them, the sealer keeps the cluster-wide xmin.
 *
 * pg_stat_activity shows backend_xid to every role, without pg_read_all_stats (only the query
 * text, state and the like are hidden): the services' haven_app role needs no extra grant
 * (checked on PostgreSQL 15; the sealer tests run it as a haven_app member).
 */
export const horizonSql = sql`
  select (case when current_setting('max_prepared_transactions')::int > 0 then pg_snapshot_xmin(s.snapshot)
          else least(pg_snapshot_xmax(s.snapshot), (
            select min(x) from pg_snapshot_xip(s.snapshot) as x
            where (x::text::numeric % 4294967296)::bigint in (
              select a.backend_xid::text::bigint from pg_stat_activity a
              where a.datid = (select oid from pg_database where datname = current_database()) and a.backend_xid is not null)))
          end)::text as horizon
  from (select pg_current_snapshot() as snapshot) s`

/**
 * Seals up to `batchSize` events below the horizon in one transaction, and signs a checkpoint in it
 * when one is due. The lock is transaction-scoped (`pg_try_advisory_xact_lock`): it can never be
 * left behind on a pooled connection, and it is released if the process dies mid-batch. Two
 * sealers simply take turns; each re-reads the head of the chain under the lock.
 *
 * READ COMMITTED whatever the server's default: the events are read with a snapshot taken after
 * the horizon's (see `horizonSql`), which sees every transaction that ended before it.
 */
export async function sealAuditBatch (db: Db, signingKey: KeyObject, policy: SealPolicy, now: () => Date = () => new Date()): Promise<SealBatch> {
  return await db.transaction(async (tx) => {
    const [lock] = await rowsOf<{ locked: boolean }>(tx, sql`select pg_try_advisory_xact_lock(${sealerLockKey}) as locked`)
    if (lock?.locked !== true) return { sealed: 0, busy: true, checkpoint: null }
    const [snapshot] = await rowsOf<{ horizon: string }>(tx, horizonSql)
    // The events are read by the next statement, with a snapshot taken after the horizon was.
    const horizon = snapshot?.horizon ?? '0'
    const [head] = await rowsOf<HeadRow>(tx, sql`
      select s.position::text as position, s.chain_hash, e.xid::text as xid, e.seq::text as seq
      from audit_seals s left join audit_events e on e.id = s.event_id
      order by s.position desc limit 1`)
    if (head !== undefined && (head.xid === null || head.seq === null)) {
      throw new SealerHaltedError(`the event sealed at position ${head.position} is missing from audit_events: sealing stops until the trail is investigated (run pnpm audit:verify)`)
    }
    const rows = await rowsOf<{ id: string, event_hash: string }>(tx, sql`
      select e.id::text as id, ${eventHashSql} as event_hash from audit_events e
      where e.xid < ${horizon}::xid8
        ${head !== undefined ? sql`and (e.xid, e.seq) > (${head.xid}::xid8, ${head.seq}::bigint)` : sql``}
      order by e.xid, e.seq
      limit ${policy.batchSize}`)
    let position = head !== undefined ? Number(head.position) : 0
    let chain = head?.chain_hash ?? genesisHash
    if (rows.length > 0) {
      const seals = rows.map((row) => {
        chain = chainHash(chain, row.event_hash)
        position++
        return { position, event_id: row.id, event_hash: row.event_hash, chain_hash: chain }
      })
      // One parameter whatever the batch size: a JSON array unpacked by PostgreSQL.
      await tx.execute(sql`
        insert into audit_seals (position, event_id, event_hash, chain_hash, horizon)
        select x.position, x.event_id, x.event_hash, x.chain_hash, ${horizon}::xid8
        from json_to_recordset(${JSON.stringify(seals)}::json) as x(position bigint, event_id uuid, event_hash text, chain_hash text)`)
    }
    const [latest] = await rowsOf<LatestCheckpointRow>(tx, sql`
      select size::text as size, (extract(epoch from signed_at) * 1000)::bigint::text as signed_at_ms
      from audit_checkpoints order by id desc limit 1`)
    const lastSize = latest !== undefined ? Number(latest.size) : 0
    const at = now()
    const due = position > lastSize && (latest === undefined || position - lastSize >= policy.checkpointEveryEvents ||
      at.getTime() - Number(latest.signed_at_ms) >= policy.checkpointIntervalSeconds * 1000)
    let checkpoint: Checkpoint | null = null
    if (due) {
      checkpoint = signCheckpoint(signingKey, position, chain, at)
      await tx.execute(sql`
        insert into audit_checkpoints (size, head_hash, signed_at, signature, public_key)
        values (${checkpoint.size}, ${checkpoint.headHash}, ${checkpoint.signedAt}::timestamptz, ${checkpoint.signature}, ${checkpoint.publicKey})`)
    }
    return { sealed: rows.length, busy: false, checkpoint }
  }, { isolationLevel: 'read committed' })
}

/**
 * Appends a checkpoint to the file sink and flushes it to disk. Point HAVEN_CHECKPOINT_FILE at
 * storage the database's administrators cannot rewrite (another host, a WORM bucket mount).
 */
export async function appendCheckpointToFile (file: string, checkpoint: Checkpoint): Promise<void> {
  await mkdir(dirname(file), { recursive: true })
  const handle = await open(file, 'a', 0o600)
  try {
    await handle.write(checkpointLine(checkpoint))
    await handle.datasync()
  } finally {
    await handle.close()
  }
}

export type SealerConfig = Pick<WorkerConfig, 'env' | 'dataDir' | 'auditSigningKeyPem' | 'checkpointFile' | 'checkpointIntervalSeconds' | 'checkpointEveryEvents'>

export interface Sealer {
  /** Seals everything below the horizon now (in batches), signing a checkpoint if one is due; the number sealed. */
  sealOnce: () => Promise<number>
  /** Finishes the batch in progress and stops the loop. */
  stop: () => Promise<void>
}

export interface SealerOptions {
  database: Database
  config: SealerConfig
  log: Pick<Logger, 'info' | 'warn' | 'error'>
  batchSize?: number
  /** Pause between polls when there is nothing to seal: the sealer's lag when idle. */
  idleMs?: number
  /** Whether this process has more urgent work in hand (the worker's notifications): sealing waits. */
  yieldTo?: () => boolean
  /**
   * The longest a pass waits, counted from the end of the one before (the idle pause is part of
   * it). An event then waits at most this and two passes: 500 ms leaves most of the 2 s lag budget
   * to the passes themselves.
   */
  maxYieldMs?: number
}

/** The checkpoint signing key: HAVEN_AUDIT_SIGNING_KEY, else (outside production) `<dataDir>/audit-ed25519.pem`. */
export const auditSigningKey = (config: Pick<SealerConfig, 'env' | 'dataDir' | 'auditSigningKeyPem'>) =>
  loadOrCreateEd25519Key({ pem: config.auditSigningKeyPem, variable: 'HAVEN_AUDIT_SIGNING_KEY', file: join(config.dataDir, 'audit-ed25519.pem'), env: config.env })

/** Starts sealing in the background; `stop()` before closing the database. */
export function startSealer ({ database, config, log, batchSize = 5000, idleMs = 200, yieldTo = () => false, maxYieldMs = 500 }: SealerOptions): Sealer {
  const key = auditSigningKey(config).privateKey
  const policy: SealPolicy = { batchSize, checkpointEveryEvents: config.checkpointEveryEvents, checkpointIntervalSeconds: config.checkpointIntervalSeconds }
  // One batch at a time in this process (the loop and a caller of sealOnce); the lock covers other processes.
  let queue: Promise<unknown> = Promise.resolve()
  const serialised = async <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work, work)
    queue = run.catch(() => undefined)
    return await run
  }
  const drain = async (): Promise<number> => {
    let total = 0
    for (;;) {
      const batch = await sealAuditBatch(database.db, key, policy)
      total += batch.sealed
      if (batch.checkpoint !== null) {
        try {
          await appendCheckpointToFile(config.checkpointFile, batch.checkpoint)
        } catch (error) {
          // The checkpoint is in the database; the file sink is a second copy, so sealing goes on.
          log.error({ err: error, file: config.checkpointFile }, 'could not append the audit checkpoint to the file sink')
        }
        log.info({ size: batch.checkpoint.size }, 'audit checkpoint signed')
      }
      if (batch.busy || batch.sealed < batchSize || stopped) return total
    }
  }
  const sealOnce = async () => await serialised(drain)

  let stopped = false
  let wake: (() => void) | undefined
  let timer: NodeJS.Timeout | undefined
  const pause = async (ms: number) => await new Promise<void>((resolve) => {
    wake = resolve
    timer = setTimeout(resolve, ms)
  })
  let lastError = ''
  let lastErrorAt = 0
  const running = (async () => {
    let passEnded = Date.now()
    while (!stopped) {
      while (!stopped && yieldTo() && Date.now() - passEnded < maxYieldMs) await pause(Math.min(idleMs, 25))
      if (stopped) break
      try {
        const sealed = await sealOnce()
        passEnded = Date.now()
        lastError = ''
        if (sealed === 0 && !stopped) await pause(idleMs)
      } catch (error) {
        // Logged when it changes, and once a minute while it lasts (a halted sealer fails every pass).
        const message = error instanceof Error ? error.message : String(error)
        if (message !== lastError || Date.now() - lastErrorAt > 60_000) {
          log.error({ err: error }, error instanceof SealerHaltedError ? 'audit sealer halted' : 'audit sealing failed; retrying')
          lastError = message
          lastErrorAt = Date.now()
        }
        if (!stopped) await pause(Math.max(idleMs * 10, 2000))
      }
    }
  })()
  log.info({ checkpointFile: config.checkpointFile }, 'audit sealer started')
  return {
    sealOnce,
    stop: async () => {
      stopped = true
      clearTimeout(timer)
      wake?.()
      await running
    }
  }
}
