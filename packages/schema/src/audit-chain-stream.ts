/**
 * The fast path of audit chain verification, on PostgreSQL through postgres.js only.
 *
 * `verifyAuditChain` (audit-chain.ts) walks the chain in batches, each one joining seals to events
 * and having PostgreSQL build and hash every event's canonical bytes: exact, but about 30,000
 * events a second. This walk reads the same rows as two `COPY … TO STDOUT (FORMAT binary)`
 * streams on two connections, so two backends work at once and Node does the hashing:
 *
 * - seals by position, and events by (xid, seq), the seal order. In an intact trail the two zip
 *   1:1: the n-th event in (xid, seq) order is the one sealed at position n. Both transactions
 *   share one exported snapshot (`pg_export_snapshot`), so they see the same rows.
 * - Node rebuilds each event's canonical bytes straight from the COPY fields (the bytes
 *   `canonicalEventBytes` defines), hashes them with one-shot `crypto.hash`, chains, and compares
 *   with the stored seal hashes and the checkpoints.
 *
 * It only ever says "everything up to position n holds". At the first position where anything at
 * all differs from an intact trail (a hash, an id, the order, a checkpoint, a value it cannot
 * encode), it stops checking and hands the last good position to the precise walk, which goes on
 * from there and names the mismatch exactly as it would from the start: every check it makes up to
 * that position is one the precise walk makes too (or a stricter one).
 */
import { hash } from 'node:crypto'
import type { Readable } from 'node:stream'
import type postgres from 'postgres'

/** Where a walk along the chain stands after `position` events that all matched. */
export interface ChainWalkState {
  position: number
  /** Chain hash at `position`, hex. */
  head: string
  /** (xid, seq) of the event at `position`. */
  previousKey: readonly [bigint, bigint] | undefined
  /** The largest checkpoint size at or below `position` that matched. */
  lastGoodCheckpoint: number
}

export interface StreamWalkInput {
  /** Database checkpoints to compare with: those of id at most this (read before the walk). */
  checkpointBoundId: string | undefined
  fileCheckpoint: { size: number, headHash: string } | undefined
}

export interface StreamWalkResult {
  state: ChainWalkState
  /** The whole chain matched, and every event up to the last sealed one is in it. */
  complete: boolean
}

type Client = postgres.Sql

/**
 * The postgres.js client behind a drizzle handle, when it can run the fast path: it needs two
 * connections at once. PGlite (one connection, and no COPY TO STDOUT through its driver) and a
 * one-connection pool get undefined: the precise walk does it all.
 */
export function streamingClient (db: unknown): Client | undefined {
  const client = (db as { $client?: unknown }).$client as (Client & { options?: { max?: number } }) | undefined
  if (typeof client !== 'function' || typeof client.reserve !== 'function' || typeof client.unsafe !== 'function') return undefined
  return (client.options?.max ?? 0) >= 2 ? client : undefined
}

const copyHeader = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1')

const dataView = (buffer: Buffer) => new DataView(buffer.buffer, buffer.byteOffset, buffer.length)

/**
 * Rows of a `COPY … (FORMAT binary)` stream: each row is a 16-bit field count, then each field as a
 * 32-bit length (-1 for null) and its bytes. The fields of the current row are left as offsets
 * into `buffer` and `data`, a DataView of it (the encoder reads and copies through that, several
 * times faster than byte by byte on the Buffer); nothing is copied. postgres.js hands over whole
 * CopyData messages (a row each, merged by the stream when they queue up: some 64 KB per chunk
 * here); a row split across chunks is joined anyway.
 */
class BinaryCopyReader {
  buffer: Buffer = Buffer.alloc(0)
  data = dataView(this.buffer)
  readonly start: Int32Array
  readonly length: Int32Array
  private offset = 0
  private header = true
  private done = false
  private readonly chunks: AsyncIterator<Buffer>

  constructor (private readonly stream: Readable, readonly fields: number) {
    this.chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>
    this.start = new Int32Array(fields)
    this.length = new Int32Array(fields)
  }

  /** The next row into start/length: 'row'; 'more' when the buffer holds no whole row yet; 'end' after the trailer. */
  next (): 'row' | 'more' | 'end' {
    const buffer = this.buffer
    let at = this.offset
    if (this.header) {
      if (buffer.length - at < 19) return 'more'
      if (buffer.compare(copyHeader, 0, 11, at, at + 11) !== 0) throw new Error('not a binary COPY stream')
      const extension = buffer.readUInt32BE(at + 15)
      if (buffer.length - at < 19 + extension) return 'more'
      at += 19 + extension
      this.offset = at
      this.header = false
    }
    if (buffer.length - at < 2) return 'more'
    const data = this.data
    const count = data.getInt16(at)
    if (count === -1) { this.offset = at + 2; return 'end' }
    if (count !== this.fields) throw new Error(`a COPY row of ${count} fields, expected ${this.fields}`)
    at += 2
    for (let i = 0; i < count; i++) {
      if (buffer.length - at < 4) return 'more'
      const length = data.getInt32(at)
      at += 4
      this.start[i] = at
      this.length[i] = length
      if (length > 0) {
        if (buffer.length - at < length) return 'more'
        at += length
      }
    }
    this.offset = at
    return 'row'
  }

  /** Appends the next chunk of the stream; false when it has ended. */
  async fill (): Promise<boolean> {
    if (this.done) return false
    const chunk = await this.chunks.next()
    if (chunk.done === true) {
      this.done = true
      // postgres.js pauses its socket when a chunk fills the stream's buffer, and resumes it only
      // from the stream's _read, which Node no longer calls once the stream has ended: if the last
      // chunk filled it, the connection would wait forever. Resume it once more.
      const stream = this.stream as unknown as { _read: (size: number) => void }
      stream._read(0)
      return false
    }
    const rest = this.buffer.length - this.offset
    this.buffer = rest > 0 ? Buffer.concat([this.buffer.subarray(this.offset), chunk.value]) : chunk.value
    this.data = dataView(this.buffer)
    this.offset = 0
    return true
  }

  /** After `next()` said 'more': waits for data until there is a row or the end. */
  async more (): Promise<'row' | 'end'> {
    for (;;) {
      if (!await this.fill()) throw new Error('the COPY stream ended inside a row')
      const state = this.next()
      if (state !== 'more') return state
    }
  }

  /** Reads the stream to its end without looking at it: the connection must be left idle. */
  async drain (): Promise<void> {
    while (await this.fill()) this.offset = this.buffer.length
  }
}

/**
 * The events' columns, in canonical order, as PostgreSQL's binary values: sending those costs the
 * events' backend far less than printing them as text (uuid_out, to_char), and that backend is
 * what limits the walk. Node prints them as PostgreSQL would (`chainEventColumns`): uuids in
 * lower-case 8-4-4-4-12 hex, integers in decimal, the time with `to_char`'s
 * `YYYY-MM-DD"T"HH24:MI:SS.US"Z"` in UTC. Enum labels and text arrive as their bytes.
 */
const eventFields = `e.id, e.seq, e.xid, e.occurred_at, e.actor_user_id, e.actor_agency_id, e.actor_roles, e.action, e.outcome,
  e.referral_id, e.target_type, e.target_id, e.recipient_agency_id, e.purpose, e.request_id, e.ip`
const uuid = 0
const int8 = 1
const timestamp = 2
const roleList = 3
const text = 4
const eventFieldKinds = [uuid, int8, int8, timestamp, uuid, uuid, roleList, text, text, uuid, text, uuid, uuid, text, text, text]
const eventFieldCount = eventFieldKinds.length
const seqField = 1
const xidField = 2

/**
 * The column types those binary values are read as, for the events and the seals, in the COPYs'
 * order. The encoder reads only the bytes, and a column whose type were changed while its binary
 * form stayed the same (text to bytea, say, by someone with DDL rights) would pass here while the
 * precise walk, printing the new type, sees a changed event: the walk runs only on these types.
 */
const expectedColumnTypes = {
  audit_events: { columns: eventFields.replaceAll('e.', '').split(/,\s*/), types: 'uuid,bigint,xid8,timestamp with time zone,uuid,uuid,role[],audit_action,audit_outcome,uuid,audit_target_type,uuid,uuid,purpose,text,text' },
  audit_seals: { columns: ['position', 'event_id', 'event_hash', 'chain_hash', 'horizon'], types: 'bigint,uuid,text,text,xid8' }
}

const versionLine = Buffer.from('haven-audit-event/1\n', 'latin1')

/** The two lower-case hex digits of each byte value, as one big-endian 16-bit number. */
const hexPairs = new Uint16Array(256)
for (let i = 0; i < 256; i++) hexPairs[i] = '0123456789abcdef'.charCodeAt(i >> 4) << 8 | '0123456789abcdef'.charCodeAt(i & 15)

/**
 * Whether the stored text at `from` is exactly the lower-case hex of `digest` (32 bytes as a
 * latin1 string, as `crypto.hash` returns them for 'binary'): the precise walk's comparison of the
 * two hex strings. Copies the digest's bytes to `to` in `target` as it goes.
 */
function storedHexIs (digest: string, source: DataView, from: number, length: number, target: Buffer, to: number): boolean {
  if (length !== 64) return false
  for (let i = 0; i < 32; i++) {
    const byte = digest.charCodeAt(i)
    if (source.getUint16(from + 2 * i) !== hexPairs[byte]) return false
    target[to + i] = byte
  }
  return true
}

/** PostgreSQL's timestamp epoch (2000-01-01) in Unix seconds. */
const postgresEpochSeconds = 946_684_800
/** Times this encoder prints: years 1970 to 9999, where `to_char` prints four-digit years as toISOString does. */
const latestSecond = Date.UTC(9999, 11, 31, 23, 59, 59) / 1000 - postgresEpochSeconds
const earliestSecond = -postgresEpochSeconds

/** A signed 64-bit integer as a number: NaN beyond 2^53 (the precise walk then judges). */
function int64 (source: DataView, from: number): number {
  const high = source.getInt32(from)
  if (high >= 0x200000 || high < -0x200000) return NaN
  return high * 0x1_0000_0000 + source.getUint32(from + 4)
}

/**
 * Canonical bytes of the current event row, written into a buffer reused for every event (the
 * version line stays at its start), through a DataView of it. Returns their length, or -1 for a
 * row this encoder does not handle (a value out of its ranges, a role list with nulls or more than
 * one dimension), which the precise walk then judges.
 */
class CanonicalWriter {
  bytes = Buffer.alloc(64 * 1024)
  private data = dataView(this.bytes)
  /**
   * `bytes.subarray(0, length)` by length, made once: a new view per event costs more than the
   * rest of its bookkeeping, and the canonical lengths of a trail are a handful.
   */
  private views: Buffer[] = []
  /** `YYYY-MM-DDTHH:MI:SS.` of the second last printed: events come in bursts within a second. */
  private readonly secondText = new DataView(new ArrayBuffer(20))
  private second = NaN

  constructor () { versionLine.copy(this.bytes, 0) }

  write (row: BinaryCopyReader): number {
    const source = row.data
    let needed = versionLine.length
    for (let i = 0; i < eventFieldCount; i++) needed += 2 * Math.max(row.length[i] as number, 0) + 24
    if (needed > this.bytes.length) {
      this.bytes = Buffer.alloc(2 * needed)
      this.data = dataView(this.bytes)
      this.views = []
      versionLine.copy(this.bytes, 0)
    }
    const out = this.data
    let at = versionLine.length
    for (let i = 0; i < eventFieldCount; i++) {
      const from = row.start[i] as number
      const length = row.length[i] as number
      const kind = eventFieldKinds[i]
      if (length < 0) {
        out.setUint8(at++, 126) // ~
      } else if (kind === text) {
        at = writeField(source, from, length, out, at)
      } else if (kind === uuid) {
        if (length !== 16) return -1
        at = writeUuid(source, from, out, at)
      } else if (kind === int8) {
        if (length !== 8) return -1
        const value = int64(source, from)
        if (!(value >= 0)) return -1
        at = writeDecimalField(out, at, value)
      } else if (kind === timestamp) {
        if (length !== 8) return -1
        at = this.writeTime(int64(source, from), out, at)
        if (at < 0) return -1
      } else {
        at = writeRoles(source, from, length, out, at)
        if (at < 0) return -1
      }
      out.setUint8(at++, 10) // \n
    }
    return at
  }

  /** The first `length` bytes written, as a view that stays valid until the next `write`. */
  view (length: number): Buffer {
    return this.views[length] ??= this.bytes.subarray(0, length)
  }

  /** `27:YYYY-MM-DDTHH:MI:SS.ffffffZ` from microseconds since 2000-01-01 UTC. */
  private writeTime (micros: number, out: DataView, at: number): number {
    const second = Math.floor(micros / 1_000_000)
    if (!(second >= earliestSecond && second <= latestSecond)) return -1
    const secondText = this.secondText
    if (second !== this.second) {
      const iso = new Date((second + postgresEpochSeconds) * 1000).toISOString()
      for (let i = 0; i < 20; i++) secondText.setUint8(i, iso.charCodeAt(i))
      this.second = second
    }
    out.setUint8(at, 50) // 2
    out.setUint8(at + 1, 55) // 7
    out.setUint8(at + 2, 58) // :
    copyBytes(secondText, 0, 20, out, at + 3)
    let fraction = micros - second * 1_000_000
    for (let i = at + 28; i > at + 22; i--) {
      const rest = (fraction / 10) | 0
      out.setUint8(i, 48 + fraction - 10 * rest)
      fraction = rest
    }
    out.setUint8(at + 29, 90) // Z
    return at + 30
  }
}

/** `36:` and the uuid as 8-4-4-4-12 lower-case hex. */
function writeUuid (source: DataView, from: number, out: DataView, at: number): number {
  out.setUint8(at, 51) // 3
  out.setUint8(at + 1, 54) // 6
  out.setUint8(at + 2, 58) // :
  at = writeHex(source, from, 4, out, at + 3)
  out.setUint8(at, 45) // -
  at = writeHex(source, from + 4, 2, out, at + 1)
  out.setUint8(at, 45)
  at = writeHex(source, from + 6, 2, out, at + 1)
  out.setUint8(at, 45)
  at = writeHex(source, from + 8, 2, out, at + 1)
  out.setUint8(at, 45)
  return writeHex(source, from + 10, 6, out, at + 1)
}

/** `count` bytes (even) as lower-case hex, four digits at a time. */
function writeHex (source: DataView, from: number, count: number, out: DataView, at: number): number {
  for (let i = 0; i < count; i += 2) {
    out.setUint32(at + 2 * i, (hexPairs[source.getUint8(from + i)] as number) << 16 | (hexPairs[source.getUint8(from + i + 1)] as number))
  }
  return at + 2 * count
}

/** `<digits>:<value in decimal>` */
function writeDecimalField (out: DataView, at: number, value: number): number {
  const digits = decimalDigits(value)
  at = writeDecimal(out, at, digits)
  out.setUint8(at++, 58) // :
  return writeDecimal(out, at, value, digits)
}

/** Digits of a non-negative integer below 2^53 in decimal, without dividing. */
function decimalDigits (value: number): number {
  let digits = 1
  for (let power = 10; value >= power; power *= 10) digits++
  return digits
}

/** `<byte length>:<bytes>` */
function writeField (source: DataView, from: number, length: number, out: DataView, at: number): number {
  at = writeDecimal(out, at, length)
  out.setUint8(at++, 58) // :
  return copyBytes(source, from, length, out, at)
}

/** Copies four bytes at a time: for the short fields here, cheaper than a call into Buffer.copy. */
function copyBytes (source: DataView, from: number, length: number, out: DataView, at: number): number {
  let i = 0
  for (; i + 4 <= length; i += 4) out.setUint32(at + i, source.getUint32(from + i))
  for (; i < length; i++) out.setUint8(at + i, source.getUint8(from + i))
  return at + length
}

function writeDecimal (out: DataView, at: number, value: number, digits = decimalDigits(value)): number {
  for (let i = at + digits - 1; i >= at; i--) {
    const rest = Math.floor(value / 10)
    out.setUint8(i, 48 + value - 10 * rest)
    value = rest
  }
  return at + digits
}

/**
 * `<count>#` then each role as a field, from a binary array (dimensions, null flag, element type,
 * then per dimension its size and lower bound, then each element as length and bytes). The enum
 * labels are sent as their text. -1 for what the canonical form has no single answer to here.
 */
function writeRoles (source: DataView, from: number, length: number, out: DataView, at: number): number {
  if (length < 12) return -1
  const dimensions = source.getInt32(from)
  const hasNulls = source.getInt32(from + 4)
  if (hasNulls !== 0) return -1
  if (dimensions === 0) {
    out.setUint8(at, 48) // 0
    out.setUint8(at + 1, 35) // #
    return at + 2
  }
  if (dimensions !== 1 || length < 20) return -1
  const count = source.getInt32(from + 12)
  if (count < 0) return -1
  at = writeDecimal(out, at, count)
  out.setUint8(at++, 35) // #
  const end = from + length
  let element = from + 20
  for (let i = 0; i < count; i++) {
    if (element + 4 > end) return -1
    const size = source.getInt32(element)
    if (size < 0 || element + 4 + size > end) return -1
    at = writeField(source, element + 4, size, out, at)
    element += 4 + size
  }
  return element === end ? at : -1
}

const digitsOnly = /^\d+$/

/** Whether two 16-byte uuid fields are the same uuid. */
function sameId (a: DataView, aFrom: number, aLength: number, b: DataView, bFrom: number, bLength: number): boolean {
  if (aLength !== 16 || bLength !== 16) return false
  for (let i = 0; i < 16; i += 4) if (a.getUint32(aFrom + i) !== b.getUint32(bFrom + i)) return false
  return true
}

/**
 * Walks the chain from its start with the two COPY streams, as far as it matches. Resolves to the
 * state at the last position that matched, and whether that is the end of a chain that matched
 * throughout. Checks, at each position n, everything the precise walk checks there: the seal's
 * position is n, the event it names exists, its hash is the stored one, the chain hash follows,
 * the event comes after the one before in (xid, seq) order and below the seal's horizon, and the
 * checkpoints of size n match. The zip itself checks what the precise walk checks at the end: no
 * event below the last sealed one is missing from the chain.
 */
export async function walkChainStreaming (client: Client, input: StreamWalkInput): Promise<StreamWalkResult> {
  const sealSide = await client.reserve()
  let eventSide: Awaited<ReturnType<Client['reserve']>> | undefined
  try {
    eventSide = await client.reserve()
    const events = eventSide
    try {
      await sealSide.unsafe('begin isolation level repeatable read read only')
      const [exported] = await sealSide.unsafe<{ snapshot: string }[]>('select pg_export_snapshot() as snapshot')
      await events.unsafe('begin isolation level repeatable read read only')
      await events.unsafe(`set transaction snapshot '${(exported?.snapshot ?? '').replace(/[^0-9A-F-]/gi, '')}'`)
      return await walkInSnapshot(sealSide, events, input)
    } finally {
      // Whatever failed, neither connection goes back to the pool inside a transaction (a rollback
      // where none is open only warns).
      await Promise.allSettled([sealSide.unsafe('rollback'), events.unsafe('rollback')])
    }
  } finally {
    sealSide.release()
    eventSide?.release()
  }
}

interface CheckpointRow { size: string, head_hash: string }

async function walkInSnapshot (sealSide: Client, eventSide: Client, input: StreamWalkInput): Promise<StreamWalkResult> {
  const state: ChainWalkState = { position: 0, head: '0'.repeat(64), previousKey: undefined, lastGoodCheckpoint: 0 }
  const [last] = await sealSide.unsafe<{ position: string, xid: string | null, seq: string | null }[]>(`
    select s.position::text as position, e.xid::text as xid, e.seq::text as seq
    from audit_seals s left join audit_events e on e.id = s.event_id order by s.position desc limit 1`)
  if (last === undefined) return { state, complete: true }
  for (const [table, expected] of Object.entries(expectedColumnTypes)) {
    const [found] = await sealSide.unsafe<{ types: string | null }[]>(`
      select string_agg(format_type(a.atttypid, a.atttypmod), ',' order by array_position($1::text[], a.attname::text)) as types
      from pg_attribute a where a.attrelid = $2::regclass and a.attname = any($1::text[]) and not a.attisdropped`, [expected.columns, table])
    if (found?.types !== expected.types) return { state, complete: false }
  }
  if (last.xid === null || last.seq === null || !digitsOnly.test(last.position) || !digitsOnly.test(last.xid) || !digitsOnly.test(last.seq)) {
    return { state, complete: false }
  }
  // The database's checkpoints: sizes, and head hashes as stored, compared as text as the precise walk does.
  const checkpointRows = input.checkpointBoundId === undefined
    ? []
    : await sealSide.unsafe<CheckpointRow[]>(
      'select c.size::text as size, c.head_hash from audit_checkpoints c where c.id <= $1::bigint order by c.size, c.id', [input.checkpointBoundId])
  const checkpointSizes = new Float64Array(checkpointRows.length + 1)
  const checkpointHeads = checkpointRows.map((row, i) => {
    checkpointSizes[i] = Number(row.size)
    return row.head_hash
  })
  checkpointSizes[checkpointRows.length] = Infinity
  const fileSize = input.fileCheckpoint?.size ?? -1
  const fileHead = input.fileCheckpoint?.headHash

  const seals = new BinaryCopyReader(await sealSide.unsafe(`
    copy (select s.position, s.event_id, s.event_hash, s.chain_hash, s.horizon
          from audit_seals s where s.position <= ${last.position} order by s.position) to stdout (format binary)`).readable(), 5)
  let events: BinaryCopyReader | undefined
  try {
    events = new BinaryCopyReader(await eventSide.unsafe(`
      copy (select ${eventFields} from audit_events e
            where (e.xid, e.seq) <= ('${last.xid}'::xid8, ${last.seq}::bigint) order by e.xid, e.seq) to stdout (format binary)`).readable(), eventFieldCount)
    const canonical = new CanonicalWriter()
    // [chain hash at the previous position ‖ event hash]: the input of the next chain hash.
    const chainInput = Buffer.alloc(64)
    // Each hash comes back as a latin1 string of its 32 bytes: on Node 20 `crypto.hash` returns a
    // string several times faster than a Buffer. It is compared with the stored hex text as that
    // arrives, and only printed as hex where a checkpoint compares it.
    const digestHex = (digest: string) => Buffer.from(digest, 'latin1').toString('hex')
    /** The chain hash at `position`. */
    let head = '\0'.repeat(32)
    let position = 0
    let previousXid = -1
    let previousSeq = -1
    let lastGoodCheckpoint = 0
    let nextCheckpoint = 0
    let matched = true

    // Rows are taken synchronously while the buffers hold them; awaiting only for the next chunk.
    for (;;) {
      let sealRow = seals.next()
      if (sealRow === 'more') sealRow = await seals.more()
      if (sealRow === 'end') break
      let eventRow = events.next()
      if (eventRow === 'more') eventRow = await events.more()
      if (eventRow === 'end') { matched = false; break }
      const at = position + 1
      const s = seals.data
      const e = events.data
      const sealPosition = seals.length[0] === 8 ? int64(s, seals.start[0] as number) : NaN
      const seq = events.length[seqField] === 8 ? int64(e, events.start[seqField] as number) : NaN
      const xid = events.length[xidField] === 8 ? int64(e, events.start[xidField] as number) : NaN
      const horizon = seals.length[4] === 8 ? int64(s, seals.start[4] as number) : NaN
      // NaN fails every comparison below: out of range, the precise walk decides.
      if (!(sealPosition === at && xid >= 0 && seq >= 0 && xid < horizon) ||
        !sameId(s, seals.start[1] as number, seals.length[1] as number, e, events.start[0] as number, events.length[0] as number) ||
        xid < previousXid || (xid === previousXid && seq <= previousSeq)) { matched = false; break }
      const length = canonical.write(events)
      if (length < 0) { matched = false; break }
      const eventHash = hash('sha256', canonical.view(length), 'binary')
      if (!storedHexIs(eventHash, s, seals.start[2] as number, seals.length[2] as number, chainInput, 32)) { matched = false; break }
      const next = hash('sha256', chainInput, 'binary')
      // Into the input of the next chain hash, as it matches (`head` keeps the last good one).
      if (!storedHexIs(next, s, seals.start[3] as number, seals.length[3] as number, chainInput, 0)) { matched = false; break }
      while ((checkpointSizes[nextCheckpoint] as number) < at) nextCheckpoint++
      if (checkpointSizes[nextCheckpoint] === at || fileSize === at) {
        const nextHex = digestHex(next)
        let checkpointsMatch = fileSize !== at || fileHead === nextHex
        for (let i = nextCheckpoint; checkpointSizes[i] === at; i++) if (checkpointHeads[i] !== nextHex) checkpointsMatch = false
        if (!checkpointsMatch) { matched = false; break }
        if (checkpointSizes[nextCheckpoint] === at) lastGoodCheckpoint = at
      }
      head = next
      position = at
      previousXid = xid
      previousSeq = seq
    }
    // An event left over below the last sealed one was never sealed: the precise walk names it.
    if (matched) {
      const leftover = events.next()
      if (leftover === 'row' || (leftover === 'more' && await events.more() === 'row')) matched = false
    }
    await Promise.all([seals.drain(), events.drain()])
    return {
      state: {
        position,
        head: digestHex(head),
        previousKey: position > 0 ? [BigInt(previousXid), BigInt(previousSeq)] : undefined,
        lastGoodCheckpoint
      },
      complete: matched
    }
  } catch (error) {
    // Both connections must leave COPY before their transactions can end (the events' COPY may
    // have failed to start while the seals' was already running).
    await Promise.allSettled([seals.drain(), events?.drain()])
    throw error
  }
}
