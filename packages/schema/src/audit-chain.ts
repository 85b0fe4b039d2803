/**
 * The audit chain, defined once for the sealer (worker), GET /v1/audit/verify (API) and
 * `pnpm audit:verify` (CLI).
 *
 * - An event's **canonical bytes**: a version line, then each field of the event row in a fixed
 *   order, length-prefixed (`<utf-8 byte length>:<value>`, `~` for null, `<n>#` before a list), one
 *   per line. Length prefixes make the encoding unambiguous whatever a value contains, so no two
 *   different events share bytes; nothing depends on an object's key order.
 * - **event hash** = SHA-256(canonical bytes); **chain hash** at position n =
 *   SHA-256(chain hash at n-1 ‖ event hash at n), both as 32 raw bytes; position 0 is 32 zero bytes.
 * - A **checkpoint** is an Ed25519 signature over (size, head hash, signing time), in a fixed text
 *   payload. It is stored in audit_checkpoints and appended to a file sink outside the database,
 *   so a rewrite of every audit table by a database superuser still contradicts a signature made
 *   before it.
 *
 * The chain's order is the seal order: events below the commit-order horizon, by (xid, seq). See
 * the sealer (services/worker/src/sealer.ts) for why that never skips a late commit.
 *
 * The canonical bytes are written three times, to the same specification: `canonicalEventBytes`
 * in TypeScript (the reference, for tests and anyone checking an export offline), `eventHashSql`,
 * which lets PostgreSQL build and hash them where the rows are (the sealer, and the precise
 * verification walk), and the streaming verification walk's encoder (audit-chain-stream.ts), which
 * builds them in Node from PostgreSQL's binary COPY values. Property tests hold them to the same
 * bytes for arbitrary events.
 */
import { createPublicKey, hash, type KeyObject, sign, verify } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { sql } from 'drizzle-orm'
import { streamingClient, walkChainStreaming } from './audit-chain-stream.ts'
import { roles } from './constants.ts'
import { type Db, rowsOf } from './db.ts'

export const genesisHash = '0'.repeat(64)

/** An audit event as the chain hashes it: every column of the row, as text. */
export interface ChainEvent {
  id: string
  seq: string
  xid: string
  /** Microsecond precision, UTC, as PostgreSQL stores it: `2026-11-28T16:41:52.123456Z`. */
  occurredAt: string
  actorUserId: string | null
  actorAgencyId: string | null
  actorRoles: string[]
  action: string
  outcome: string
  referralId: string | null
  targetType: string | null
  targetId: string | null
  recipientAgencyId: string | null
  purpose: string
  requestId: string | null
  ip: string | null
}

/**
 * The select list that reads a ChainEvent from `audit_events` aliased `e`. Everything is turned
 * into text by PostgreSQL, so both drivers (postgres.js and PGlite) hand back identical strings.
 */
export const chainEventColumns = sql`
  e.id::text as id, e.seq::text as seq, e.xid::text as xid,
  to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as occurred_at,
  e.actor_user_id::text as actor_user_id, e.actor_agency_id::text as actor_agency_id,
  array_to_json(e.actor_roles)::text as actor_roles, e.action::text as action, e.outcome::text as outcome,
  e.referral_id::text as referral_id, e.target_type::text as target_type, e.target_id::text as target_id,
  e.recipient_agency_id::text as recipient_agency_id, e.purpose::text as purpose, e.request_id as request_id, e.ip as ip`

export interface ChainEventRow {
  id: string
  seq: string
  xid: string
  occurred_at: string
  actor_user_id: string | null
  actor_agency_id: string | null
  actor_roles: string
  action: string
  outcome: string
  referral_id: string | null
  target_type: string | null
  target_id: string | null
  recipient_agency_id: string | null
  purpose: string
  request_id: string | null
  ip: string | null
}

export function toChainEvent (row: ChainEventRow): ChainEvent {
  return {
    id: row.id,
    seq: row.seq,
    xid: row.xid,
    occurredAt: row.occurred_at,
    actorUserId: row.actor_user_id,
    actorAgencyId: row.actor_agency_id,
    actorRoles: JSON.parse(row.actor_roles) as string[],
    action: row.action,
    outcome: row.outcome,
    referralId: row.referral_id,
    targetType: row.target_type,
    targetId: row.target_id,
    recipientAgencyId: row.recipient_agency_id,
    purpose: row.purpose,
    requestId: row.request_id,
    ip: row.ip
  }
}

/** `<byte length>:<value>`, or `~` for null, in SQL. */
const sqlField = (expr: string) => `case when ${expr} is null then '~' else octet_length(${expr})::text || ':' || ${expr} end`

/**
 * The role list's fields without a subquery per row (which cost more than everything else): each
 * element is wrapped in its own pair of bars, `|a||b|`, and each known role label replaced by its
 * length-prefixed field. Role labels are the enum's, plain ASCII; a label missing here would show
 * as a mismatch, never pass silently.
 */
const sqlRoleFields = roles.reduce((expr, role) => `replace(${expr}, '|${role}|', '${role.length}:${role}')`,
  `case when cardinality(e.actor_roles) > 0 then '|' || array_to_string(e.actor_roles, '||') || '|' else '' end`)

/**
 * SHA-256 of an event's canonical bytes (alias `e`), hex, computed by PostgreSQL: the same bytes as
 * `canonicalEventBytes` (the database must be UTF-8, as Haven's are).
 */
export const eventHashSql = sql.raw(`encode(sha256(convert_to(concat_ws(E'\\n',
  'haven-audit-event/1', ${sqlField('e.id::text')}, ${sqlField('e.seq::text')}, ${sqlField('e.xid::text')},
  ${sqlField(`to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`)},
  ${sqlField('e.actor_user_id::text')}, ${sqlField('e.actor_agency_id::text')},
  coalesce(array_length(e.actor_roles, 1), 0)::text || '#' || ${sqlRoleFields},
  ${sqlField('e.action::text')}, ${sqlField('e.outcome::text')}, ${sqlField('e.referral_id::text')}, ${sqlField('e.target_type::text')},
  ${sqlField('e.target_id::text')}, ${sqlField('e.recipient_agency_id::text')}, ${sqlField('e.purpose::text')}, ${sqlField('e.request_id')},
  ${sqlField('e.ip')}, ''), 'UTF8')), 'hex')`)

const field = (value: string | null) => value === null ? '~' : `${Buffer.byteLength(value, 'utf8')}:${value}`

export function canonicalEventBytes (event: ChainEvent): Buffer {
  return Buffer.from([
    'haven-audit-event/1',
    field(event.id),
    field(event.seq),
    field(event.xid),
    field(event.occurredAt),
    field(event.actorUserId),
    field(event.actorAgencyId),
    `${event.actorRoles.length}#${event.actorRoles.map(field).join('')}`,
    field(event.action),
    field(event.outcome),
    field(event.referralId),
    field(event.targetType),
    field(event.targetId),
    field(event.recipientAgencyId),
    field(event.purpose),
    field(event.requestId),
    field(event.ip),
    ''
  ].join('\n'), 'utf8')
}

// One-shot crypto.hash: about twice as fast as createHash for inputs this small.
export const eventHash = (event: ChainEvent): string => hash('sha256', canonicalEventBytes(event), 'hex')

export const chainHash = (previousChainHash: string, nextEventHash: string): string =>
  hash('sha256', Buffer.from(previousChainHash + nextEventHash, 'hex'), 'hex')

// --- checkpoints ------------------------------------------------------------------------------

export interface Checkpoint {
  size: number
  headHash: string
  /** ISO 8601, millisecond precision (what audit_checkpoints stores). */
  signedAt: string
  /** Ed25519 signature of `checkpointPayload`, base64. */
  signature: string
  /** The signer's public key: SPKI DER, base64. Informative only: verification uses the configured key. */
  publicKey: string
}

export const checkpointPayload = (checkpoint: Pick<Checkpoint, 'size' | 'headHash' | 'signedAt'>): Buffer =>
  Buffer.from(`haven-audit-checkpoint/1\n${checkpoint.size}\n${checkpoint.headHash}\n${checkpoint.signedAt}\n`, 'utf8')

export const publicKeyText = (key: KeyObject): string => key.export({ type: 'spki', format: 'der' }).toString('base64')
export const publicKeyFromText = (text: string): KeyObject => createPublicKey({ key: Buffer.from(text, 'base64'), format: 'der', type: 'spki' })

export function signCheckpoint (privateKey: KeyObject, size: number, headHash: string, at: Date = new Date()): Checkpoint {
  const signedAt = new Date(Math.floor(at.getTime())).toISOString()
  const signature = sign(null, checkpointPayload({ size, headHash, signedAt }), privateKey).toString('base64')
  return { size, headHash, signedAt, signature, publicKey: publicKeyText(createPublicKey(privateKey)) }
}

/** Whether `publicKey`, or any one of a list of keys (a rotation), signed the checkpoint. */
export function checkpointSignatureValid (publicKey: KeyObject | readonly KeyObject[], checkpoint: Pick<Checkpoint, 'size' | 'headHash' | 'signedAt' | 'signature'>): boolean {
  const payload = checkpointPayload(checkpoint)
  const signature = Buffer.from(checkpoint.signature, 'base64')
  return (Array.isArray(publicKey) ? publicKey as readonly KeyObject[] : [publicKey as KeyObject]).some((key) => {
    try {
      return verify(null, payload, key, signature)
    } catch {
      return false
    }
  })
}

/** One line of the file sink. */
export const checkpointLine = (checkpoint: Checkpoint): string => `${JSON.stringify({
  size: checkpoint.size, headHash: checkpoint.headHash, signedAt: checkpoint.signedAt, signature: checkpoint.signature, publicKey: checkpoint.publicKey
})}\n`

function parseCheckpointLine (line: string): Checkpoint | undefined {
  try {
    const value = JSON.parse(line) as Record<string, unknown>
    const { size, headHash, signedAt, signature, publicKey } = value
    if (!Number.isSafeInteger(size) || typeof headHash !== 'string' || !/^[0-9a-f]{64}$/.test(headHash) || typeof signedAt !== 'string' ||
      typeof signature !== 'string' || typeof publicKey !== 'string') return undefined
    return { size: size as number, headHash, signedAt, signature, publicKey }
  } catch {
    return undefined
  }
}

/**
 * The last complete checkpoint in the file sink, read from its end (the file only grows). A torn
 * last line, left by a crash mid-write, is skipped.
 */
export async function readLatestFileCheckpoint (file: string): Promise<Checkpoint | undefined> {
  let handle
  try {
    handle = await open(file, 'r')
  } catch (error) {
    if ((error as { code?: string }).code === 'ENOENT') return undefined
    throw error
  }
  try {
    const { size } = await handle.stat()
    const length = Math.min(size, 64 * 1024)
    const buffer = Buffer.alloc(length)
    await handle.read(buffer, 0, length, size - length)
    const lines = buffer.toString('utf8').split('\n').filter((line) => line.trim() !== '')
    for (let i = lines.length - 1; i >= 0; i--) {
      const checkpoint = parseCheckpointLine(lines[i] ?? '')
      if (checkpoint !== undefined) return checkpoint
    }
    return undefined
  } finally {
    await handle.close()
  }
}

/** Every checkpoint in the file sink (tests and the CLI's --all use it; the file can be large). */
export async function readFileCheckpoints (file: string): Promise<Checkpoint[]> {
  const text = await readFile(file, 'utf8').catch((error: { code?: string }) => { if (error.code === 'ENOENT') return ''; throw error })
  return text.split('\n').map(parseCheckpointLine).filter((c): c is Checkpoint => c !== undefined)
}

// --- verification -----------------------------------------------------------------------------

export const mismatchReasons = [
  'seal_missing', 'event_missing', 'event_altered', 'chain_altered', 'out_of_order', 'unsealed_event',
  'checkpoint_mismatch', 'checkpoint_beyond_chain', 'checkpoint_signature', 'no_public_key'
] as const
export type MismatchReason = (typeof mismatchReasons)[number]

export interface Mismatch {
  reason: MismatchReason
  /** The chain position where it shows, when it has one. */
  position: number | null
  /** The event that does not match (or, for a checkpoint, the event at its position). */
  eventId: string | null
  /** What was found, in words; ids and positions only. */
  detail: string
}

export interface CheckpointSummary { size: number, signedAt: string }

export interface VerifyResult {
  ok: boolean
  /** Events whose hashes were recomputed. */
  checked: number
  /** The chain's length: events sealed so far. */
  sealedThrough: number
  firstMismatch: Mismatch | null
  /** The latest checkpoint of each place they are kept, as checked. */
  checkpoints: { database: CheckpointSummary | null, file: CheckpointSummary | null }
}

export interface VerifyOptions {
  /**
   * The key checkpoints must verify against: from configuration, never from the database. Several
   * while the signing key is rotated: a checkpoint passes if any of them signed it.
   */
  publicKey: KeyObject | readonly KeyObject[] | undefined
  /** The file sink; absent or missing file: only the database's checkpoints are checked. */
  checkpointFile?: string | undefined
  /**
   * Check the signature of every checkpoint in the file sink, not only the last one's (the CLI's
   * --every-signature). It reads the whole file, and Ed25519 verifies about 7,700 signatures a
   * second: a year of checkpoints one a minute takes over a minute, so the API does not ask for it.
   */
  everyFileSignature?: boolean
  batchSize?: number
  /**
   * Walk the chain with the streaming fast path first when the database allows it (PostgreSQL with
   * a pool of two or more connections); default true. False: the precise walk alone (tests compare them).
   */
  streaming?: boolean
}

interface SealRow {
  position: string
  seal_event_id: string
  event_hash: string
  chain_hash: string
  horizon: string
  present: boolean
  xid: string | null
  seq: string | null
  computed_hash: string | null
}

interface CheckpointRow { id: string, size: string, head_hash: string, signed_at: string, signature: string }

const compareKeys = (a: readonly [bigint, bigint], b: readonly [bigint, bigint]) =>
  a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0

const isoMillis = `'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'`

/** A CheckpointRow from audit_checkpoints aliased `c`. */
const checkpointColumns = sql.raw(`c.id::text as id, c.size::text as size, c.head_hash, to_char(c.signed_at at time zone 'UTC', ${isoMillis}) as signed_at, c.signature`)

/**
 * One streaming walk per process at a time: each holds two connections of the pool for its whole
 * length, so several at once could take every connection the API serves requests from, or wait
 * for ever on their second. A verification that starts meanwhile takes the precise walk.
 */
let streamingWalkRunning = false

/**
 * Recomputes the chain from the events, in seal order, and checks it against the stored seals, the
 * signed checkpoints (all of the database's, by hash; the latest of the database and of the file
 * sink, by signature too) and the events themselves: every event up to the last sealed one must be
 * in the chain. Stops at the first mismatch, which it names.
 *
 * On PostgreSQL the streaming walk (audit-chain-stream.ts) goes first and, in an intact trail, does
 * everything. At the first position where it sees anything amiss it hands over to the precise walk
 * below, which resumes just before that position and names the mismatch as it would have from the
 * start. The precise walk reads in batches, PostgreSQL hashing each event: memory stays flat
 * whatever the size of the trail.
 */
export async function verifyAuditChain (db: Db, options: VerifyOptions): Promise<VerifyResult> {
  const batchSize = options.batchSize ?? 5000
  const fileCheckpoint = options.checkpointFile !== undefined ? await readLatestFileCheckpoint(options.checkpointFile) : undefined
  // Checkpoints written while this runs are left for the next run: the chain read here may end before them.
  // Each ORDER BY names the table's columns (`c.id`), not the text aliases of the select list, which
  // would sort '9' after '10' and make a trail of ten or more checkpoints skip some.
  const [bound] = await rowsOf<CheckpointRow>(db, sql`
    select ${checkpointColumns}
    from audit_checkpoints c order by c.id desc limit 1`)
  const latestDb = bound === undefined
    ? undefined
    : (await rowsOf<CheckpointRow>(db, sql`
        select ${checkpointColumns}
        from audit_checkpoints c where c.id <= ${bound.id}::bigint order by c.size desc, c.id desc limit 1`))[0]
  const checkpoints = {
    database: latestDb !== undefined ? { size: Number(latestDb.size), signedAt: latestDb.signed_at } : null,
    file: fileCheckpoint !== undefined ? { size: fileCheckpoint.size, signedAt: fileCheckpoint.signedAt } : null
  }
  let checked = 0
  let position = 0
  let head = genesisHash
  let previousKey: readonly [bigint, bigint] | undefined
  let lastGoodCheckpoint = 0
  const result = (firstMismatch: Mismatch | null): VerifyResult => ({ ok: firstMismatch === null, checked, sealedThrough: position, firstMismatch, checkpoints })

  // The trust anchors: the latest signed checkpoint of each place, checked with the configured key.
  const anchors: { source: 'database' | 'file', checkpoint: Pick<Checkpoint, 'size' | 'headHash' | 'signedAt' | 'signature'> }[] = []
  if (latestDb !== undefined) anchors.push({ source: 'database', checkpoint: { size: Number(latestDb.size), headHash: latestDb.head_hash, signedAt: latestDb.signed_at, signature: latestDb.signature } })
  if (fileCheckpoint !== undefined) anchors.push({ source: 'file', checkpoint: fileCheckpoint })
  for (const anchor of anchors) {
    if (options.publicKey === undefined || (Array.isArray(options.publicKey) && options.publicKey.length === 0)) {
      return result({ reason: 'no_public_key', position: null, eventId: null, detail: 'Checkpoints exist but no audit public key is configured to check their signatures (HAVEN_AUDIT_PUBLIC_KEY).' })
    }
    if (!checkpointSignatureValid(options.publicKey, anchor.checkpoint)) {
      return result({
        reason: 'checkpoint_signature', position: anchor.checkpoint.size, eventId: null,
        detail: `The latest checkpoint in the ${anchor.source === 'database' ? 'database' : 'file sink'} (size ${anchor.checkpoint.size}, signed at ${anchor.checkpoint.signedAt}) does not carry a valid signature by the configured key.`
      })
    }
  }

  // Every line of the file sink, when asked: a line rewritten in the middle of the file otherwise
  // goes unseen as long as the chain still matches the last one.
  if (options.everyFileSignature === true && options.checkpointFile !== undefined && fileCheckpoint !== undefined && options.publicKey !== undefined) {
    const publicKey = options.publicKey
    const forged = (await readFileCheckpoints(options.checkpointFile)).find((checkpoint) => !checkpointSignatureValid(publicKey, checkpoint))
    if (forged !== undefined) {
      return result({
        reason: 'checkpoint_signature', position: forged.size, eventId: null,
        detail: `A checkpoint in the file sink (size ${forged.size}, signed at ${forged.signedAt}) does not carry a valid signature by the configured key.`
      })
    }
  }

  // The streaming walk; where it stops short, the precise walk takes over from its last good position.
  const client = options.streaming === false || streamingWalkRunning ? undefined : streamingClient(db)
  let everyEventChained = false
  if (client !== undefined) {
    streamingWalkRunning = true
    const walk = await walkChainStreaming(client, { checkpointBoundId: bound?.id, fileCheckpoint })
      .finally(() => { streamingWalkRunning = false })
    position = walk.state.position
    head = walk.state.head
    previousKey = walk.state.previousKey
    lastGoodCheckpoint = walk.state.lastGoodCheckpoint
    checked = position
    everyEventChained = walk.complete
  }

  // Database checkpoints, walked alongside the chain in size order, a batch at a time.
  let pending: CheckpointRow[] = []
  let checkpointsAfter = position > 0 ? position : -1
  let checkpointsDone = bound === undefined
  const nextCheckpoint = async (): Promise<CheckpointRow | undefined> => {
    if (pending.length === 0 && !checkpointsDone && bound !== undefined) {
      pending = await rowsOf<CheckpointRow>(db, sql`
        select ${checkpointColumns}
        from audit_checkpoints c where c.id <= ${bound.id}::bigint and c.size > ${checkpointsAfter}
        order by c.size, c.id limit ${batchSize}`)
      if (pending.length < batchSize) checkpointsDone = true
      const last = pending[pending.length - 1]
      if (last !== undefined) checkpointsAfter = Number(last.size)
    }
    return pending[0]
  }
  const checkpointMismatch = (size: number, signedAt: string, source: string, eventId: string | null): Mismatch => ({
    reason: 'checkpoint_mismatch', position: size, eventId,
    detail: `The recomputed chain at position ${size} differs from the checkpoint signed at ${signedAt} (${source}): ` +
      `an event at a position after ${lastGoodCheckpoint} and up to ${size} was removed, inserted, reordered or changed, and the seals rewritten to hide it.`
  })

  while (!everyEventChained) {
    const rows = await rowsOf<SealRow>(db, sql`
      select s.position::text as position, s.event_id::text as seal_event_id, s.event_hash, s.chain_hash, s.horizon::text as horizon,
             e.id is not null as present, e.xid::text as xid, e.seq::text as seq, ${eventHashSql} as computed_hash
      from (select * from audit_seals where position > ${position} order by position limit ${batchSize}) s
      left join audit_events e on e.id = s.event_id
      order by s.position`)
    for (const row of rows) {
      const at = Number(row.position)
      if (at !== position + 1) {
        return result({ reason: 'seal_missing', position: position + 1, eventId: null, detail: `The chain jumps from position ${position} to ${at}: seals were deleted.` })
      }
      if (!row.present || row.xid === null || row.seq === null || row.computed_hash === null) {
        return result({ reason: 'event_missing', position: at, eventId: row.seal_event_id, detail: `The event sealed at position ${at} is no longer in the trail.` })
      }
      const event = { id: row.seal_event_id, xid: row.xid, seq: row.seq }
      const hash = row.computed_hash
      checked++
      if (hash !== row.event_hash) {
        return result({ reason: 'event_altered', position: at, eventId: event.id, detail: `The event at position ${at} no longer has the contents it was sealed with.` })
      }
      const next = chainHash(head, hash)
      if (next !== row.chain_hash) {
        return result({ reason: 'chain_altered', position: at, eventId: event.id, detail: `The stored chain hash at position ${at} does not follow from the events before it.` })
      }
      const key = [BigInt(event.xid), BigInt(event.seq)] as const
      if ((previousKey !== undefined && compareKeys(key, previousKey) <= 0) || key[0] >= BigInt(row.horizon)) {
        return result({
          reason: 'out_of_order', position: at, eventId: event.id,
          detail: `The event at position ${at} was not sealed in commit order: it belongs before events sealed earlier, so it was added to the past.`
        })
      }
      previousKey = key
      head = next
      position = at
      for (;;) {
        const checkpoint = await nextCheckpoint()
        if (checkpoint === undefined || Number(checkpoint.size) > position) break
        pending.shift()
        if (Number(checkpoint.size) < position) continue
        if (checkpoint.head_hash !== head) {
          const signed = options.publicKey !== undefined && checkpointSignatureValid(options.publicKey, {
            size: position, headHash: checkpoint.head_hash, signedAt: checkpoint.signed_at, signature: checkpoint.signature
          })
          return result(signed
            ? checkpointMismatch(position, checkpoint.signed_at, 'database', event.id)
            : { reason: 'checkpoint_signature', position, eventId: event.id, detail: `The checkpoint row of size ${position} in the database does not carry a valid signature: the checkpoint itself was altered.` })
        }
        lastGoodCheckpoint = position
      }
      if (fileCheckpoint !== undefined && fileCheckpoint.size === position && fileCheckpoint.headHash !== head) {
        return result(checkpointMismatch(position, fileCheckpoint.signedAt, 'file sink', event.id))
      }
    }
    if (rows.length < batchSize) break
  }

  // Checkpoints beyond the end of the chain: sealed events were removed from its end.
  for (const anchor of anchors) {
    if (anchor.checkpoint.size > position) {
      return result({
        reason: 'checkpoint_beyond_chain', position: position + 1, eventId: null,
        detail: `The checkpoint signed at ${anchor.checkpoint.signedAt} (${anchor.source === 'database' ? 'database' : 'file sink'}) covers ${anchor.checkpoint.size} events; the chain has ${position}: events were removed from its end.`
      })
    }
  }
  // Every event up to the last one sealed must be in the chain; one that is not was added to the past.
  // (A complete streaming walk has shown it already: the events up to the last sealed one zipped 1:1 with the seals.)
  if (previousKey !== undefined && !everyEventChained) {
    const [count] = await rowsOf<{ n: string }>(db, sql`
      select count(*)::text as n from audit_events where (xid, seq) <= (${previousKey[0].toString()}::xid8, ${previousKey[1].toString()}::bigint)`)
    if (Number(count?.n ?? 0) !== position) {
      const [stray] = await rowsOf<{ id: string }>(db, sql`
        select e.id::text as id from audit_events e
        where (e.xid, e.seq) <= (${previousKey[0].toString()}::xid8, ${previousKey[1].toString()}::bigint)
          and not exists (select 1 from audit_seals s where s.event_id = e.id)
        order by e.xid, e.seq limit 1`)
      return result({
        reason: 'unsealed_event', position: null, eventId: stray?.id ?? null,
        detail: 'An event that belongs among those already sealed is not in the chain: it was added to the past.'
      })
    }
  }
  return result(null)
}
