/**
 * The audit chain end to end, on databases of their own: the sealer (commit order, one at a time,
 * checkpoints), verification through GET /v1/audit/verify and `pnpm audit:verify`, and the
 * tamperings it must catch.
 */
import { spawn } from 'node:child_process'
import { createPublicKey, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import {
  auditActions, auditOutcomes, auditTargetTypes, canonicalEventBytes, type ChainEvent, chainEventColumns, type ChainEventRow, chainHash,
  checkpointSignatureValid, eventHash, eventHashSql, genesisHash, purposes, readFileCheckpoints, roles, sql as schemaSql, toChainEvent, verifyAuditChain
} from '@haven/schema'
import fc from 'fast-check'
import t, { type Test } from 'tap'
import { streamingClient, walkChainStreaming } from '../../packages/schema/src/audit-chain-stream.ts'
import { buildHarness, signedIn } from '../../services/api/test/helper.ts'
import { auditSigningKey, sealAuditBatch, sealerLockKey, startSealer } from '../../services/worker/src/sealer.ts'
import { workInHand } from '../../services/worker/src/work.ts'
import { auditKeys, ownDatabase, type OwnDatabase, sealerConfig, seedEvents, serverUrl, silentLog, tempDir } from './audit-fixtures.ts'

const root = new URL('../../', import.meta.url).pathname

const event = (fields: Partial<ChainEvent> = {}): ChainEvent => ({
  id: '00000000-0000-4000-8000-000000000001', seq: '1', xid: '700', occurredAt: '2026-11-28T10:00:00.123456Z',
  actorUserId: null, actorAgencyId: null, actorRoles: ['auditor'], action: 'audit.query', outcome: 'success', referralId: null,
  targetType: 'audit', targetId: null, recipientAgencyId: null, purpose: 'audit', requestId: 'r1', ip: '10.0.0.1', ...fields
})

/**
 * Another handle on the database at `url`, with room for the streaming walk's two connections,
 * that counts the COPY statements run through it: the streaming walk runs two, the precise walk none.
 */
async function copyCounting (t: Test, url: string) {
  const statements: string[] = []
  const { openDatabase } = await import('@haven/schema')
  const database = await openDatabase({ url, max: 4, onQuery: (statement) => { statements.push(statement) } })
  t.teardown(async () => { await database.close() })
  return {
    db: database.db,
    copies: () => statements.filter((s) => /^\s*copy \(/i.test(s)).length,
    reset: () => { statements.length = 0 }
  }
}

t.test('canonical bytes: a fixed, length-prefixed layout, so no two events share bytes', async (t) => {
  t.equal(canonicalEventBytes(event()).toString(), [
    'haven-audit-event/1', '36:00000000-0000-4000-8000-000000000001', '1:1', '3:700', '27:2026-11-28T10:00:00.123456Z', '~', '~',
    '1#7:auditor', '11:audit.query', '7:success', '~', '5:audit', '~', '~', '5:audit', '2:r1', '8:10.0.0.1', ''
  ].join('\n'))
  // Values that would run together in a naive encoding stay apart.
  t.not(eventHash(event({ actorRoles: ['auditor', 'referrer'] })), eventHash(event({ actorRoles: ['auditor,referrer'] as string[] })))
  t.not(eventHash(event({ requestId: '' })), eventHash(event({ requestId: null })))
  t.not(eventHash(event({ requestId: 'a\n2:b' , ip: null })), eventHash(event({ requestId: 'a', ip: 'b' })))
  t.equal(eventHash(event()), eventHash(event()), 'the same event always hashes the same')
  t.match(chainHash(genesisHash, eventHash(event())), /^[0-9a-f]{64}$/)
})

t.test('PostgreSQL hashes exactly the canonical bytes TypeScript defines, for any event', async (t) => {
  const own = await ownDatabase(t)
  const text = fc.string({ unit: 'binary', maxLength: 40 }).map((v) => v.replaceAll('\u0000', ''))
  const uuid = fc.option(fc.uuid(), { nil: null })
  await fc.assert(fc.asyncProperty(
    fc.record({
      roles: fc.uniqueArray(fc.constantFrom(...roles), { maxLength: 4 }), requestId: fc.option(text, { nil: null }), ip: fc.option(text, { nil: null }),
      actorUserId: uuid, referralId: uuid, targetId: uuid, action: fc.constantFrom(...auditActions), outcome: fc.constantFrom(...auditOutcomes),
      targetType: fc.option(fc.constantFrom(...auditTargetTypes), { nil: null }), purpose: fc.constantFrom(...purposes)
    }),
    async (e) => {
      const [row] = await own.database.rows<ChainEventRow & { sql_hash: string }>(schemaSql`
        insert into audit_events as e (actor_user_id, actor_roles, action, outcome, referral_id, target_type, target_id, purpose, request_id, ip)
        values (${e.actorUserId}::uuid, ${`{${e.roles.join(',')}}`}::role[], ${e.action}, ${e.outcome}, ${e.referralId}::uuid, ${e.targetType},
                ${e.targetId}::uuid, ${e.purpose}, ${e.requestId}, ${e.ip})
        returning ${chainEventColumns}, ${eventHashSql} as sql_hash`)
      if (row === undefined) throw new Error('no row')
      if (eventHash(toChainEvent(row)) !== row.sql_hash) throw new Error(`hashes differ for ${JSON.stringify(toChainEvent(row))}`)
    }
  ), { numRuns: 150 })
  t.pass('150 arbitrary events hash the same in both')
})

t.test('the streaming walk is used on PostgreSQL and agrees with the precise walk, for any events and tamperings', async (t) => {
  const own = await ownDatabase(t)
  const keys = auditKeys()
  const publicKey = createPublicKey(keys.publicPem)
  const key = auditSigningKey(sealerConfig(tempDir(t), keys)).privateKey
  const policy = { batchSize: 50, checkpointEveryEvents: 7, checkpointIntervalSeconds: 3600 }
  const counted = await copyCounting(t, own.url)
  const both = async () => {
    counted.reset()
    const streamed = await verifyAuditChain(counted.db, { publicKey })
    const streamedCopies = counted.copies()
    const precise = await verifyAuditChain(counted.db, { publicKey, streaming: false })
    return { streamed, precise, streamedCopies }
  }

  const text = fc.string({ unit: 'binary', maxLength: 40 }).map((v) => v.replaceAll('\u0000', ''))
  const uuid = fc.option(fc.uuid(), { nil: null })
  // Microseconds from 2000-01-01: mostly around now, sometimes far out (before 1970, after 9999: the precise walk's).
  const micros = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 8e14, max: 9e14 }) },
    { weight: 1, arbitrary: fc.integer({ min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }).map((n) => n - (n % 1_000_000) + (n % 7) * 100_000) }
  )
  const event = fc.record({
    at: micros, roles: fc.array(fc.constantFrom(...roles), { maxLength: 4 }), requestId: fc.option(text, { nil: null }), ip: fc.option(text, { nil: null }),
    actorUserId: uuid, actorAgencyId: uuid, referralId: uuid, targetId: uuid, recipientAgencyId: uuid,
    action: fc.constantFrom(...auditActions), outcome: fc.constantFrom(...auditOutcomes),
    targetType: fc.option(fc.constantFrom(...auditTargetTypes), { nil: null }), purpose: fc.constantFrom(...purposes)
  })
  await fc.assert(fc.asyncProperty(fc.array(event, { minLength: 1, maxLength: 12 }), async (events) => {
    for (const e of events) {
      await own.superuser`
        insert into audit_events (occurred_at, actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id,
                                  recipient_agency_id, purpose, request_id, ip)
        values (timestamptz '2000-01-01 00:00:00Z' + ${String(e.at)}::bigint * interval '1 microsecond', ${e.actorUserId}::uuid, ${e.actorAgencyId}::uuid,
                ${`{${e.roles.join(',')}}`}::role[], ${e.action}, ${e.outcome}, ${e.referralId}::uuid, ${e.targetType}, ${e.targetId}::uuid,
                ${e.recipientAgencyId}::uuid, ${e.purpose}, ${e.requestId}, ${e.ip})`
    }
    await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, policy))
    const { streamed, precise, streamedCopies } = await both()
    if (!streamed.ok || JSON.stringify(streamed) !== JSON.stringify(precise)) {
      throw new Error(`the walks disagree: ${JSON.stringify({ streamed, precise })}`)
    }
    if (streamedCopies !== 2) throw new Error(`the streaming walk was not used (${streamedCopies} COPY statements)`)
  }), { numRuns: 40 })
  const [{ n } = { n: 0 }] = await own.superuser`select count(*)::int as n from audit_seals`
  t.ok(n >= 40, `${n} sealed events verified by both walks`)

  // Tamperings, each at an earlier position than the last, so each becomes the first mismatch. The
  // latest checkpoint is left alone: its signature is checked before any walk begins.
  const tamperings: [string, (position: number) => Promise<unknown>][] = [
    ['a checkpoint head', async (p) => { await tamper(own, async (sql) => { await sql`update audit_checkpoints set head_hash = ${'ab'.repeat(32)} where size = (select max(size) from audit_checkpoints where size <= ${p})` }) }],
    ['a request id, to unicode', async (p) => { await tamper(own, async (sql) => { await sql`update audit_events set request_id = 'r\u00e9q-\u{1F600}' where id = (select event_id from audit_seals where position = ${p})` }) }],
    ['the time, by a microsecond', async (p) => { await tamper(own, async (sql) => { await sql`update audit_events set occurred_at = occurred_at + interval '1 microsecond' where id = (select event_id from audit_seals where position = ${p})` }) }],
    ['the roles', async (p) => { await tamper(own, async (sql) => { await sql`update audit_events set actor_roles = '{auditor,auditor}' where id = (select event_id from audit_seals where position = ${p})` }) }],
    ['a stored event hash, to upper case', async (p) => { await tamper(own, async (sql) => { await sql`update audit_seals set event_hash = upper(event_hash) where position = ${p}` }) }],
    ['a seal', async (p) => { await tamper(own, async (sql) => { await sql`delete from audit_seals where position = ${p}` }) }]
  ]
  const [{ latest } = { latest: 0 }] = await own.superuser`select max(size)::int as latest from audit_checkpoints`
  let position = latest + 7
  for (const [what, change] of tamperings) {
    position = Math.max(1, position - 8)
    await change(position)
    const { streamed, precise, streamedCopies } = await both()
    t.equal(streamed.ok, false, `${what}: caught`)
    t.same(streamed, precise, `${what}: both walks name the same first mismatch (${streamed.firstMismatch?.reason ?? 'none'})`)
    t.equal(streamedCopies, 2, `${what}: found by the streaming walk first`)
  }
})

t.test('an event larger than the encoder\'s first buffer (64 KB): the streaming walk grows it and still agrees', async (t) => {
  const own = await ownDatabase(t)
  const keys = auditKeys()
  const key = auditSigningKey(sealerConfig(tempDir(t), keys)).privateKey
  await seedEvents(own.superuser, 3)
  await own.superuser`
    insert into audit_events (actor_roles, action, outcome, request_id, ip)
    values ('{caseworker}', 'referral.read', 'success', repeat('r', 40000), repeat('i', 9000))`
  await seedEvents(own.superuser, 3)
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, { batchSize: 5, checkpointEveryEvents: 2, checkpointIntervalSeconds: 3600 }))
  const counted = await copyCounting(t, own.url)
  const publicKey = createPublicKey(keys.publicPem)
  t.match(await verifyAuditChain(counted.db, { publicKey }), { ok: true, checked: 7 })
  t.equal(counted.copies(), 2, 'by the streaming walk')
  await own.superuser`alter table audit_events disable trigger audit_events_no_update_delete`
  await own.superuser`update audit_events set request_id = repeat('r', 39999) || 's' where length(request_id) = 40000`
  await own.superuser`alter table audit_events enable trigger audit_events_no_update_delete`
  const streamed = await verifyAuditChain(counted.db, { publicKey })
  t.match(streamed.firstMismatch, { reason: 'event_altered', position: 4 })
  t.same(streamed, await verifyAuditChain(counted.db, { publicKey, streaming: false }), 'the same first mismatch as the precise walk')
})

t.test('a column retyped with its binary values kept (text to bytea): the streaming walk steps aside, and the change is named', async (t) => {
  const own = await ownDatabase(t)
  const keys = auditKeys()
  const key = auditSigningKey(sealerConfig(tempDir(t), keys)).privateKey
  await seedEvents(own.superuser, 12)
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, { batchSize: 5, checkpointEveryEvents: 4, checkpointIntervalSeconds: 3600 }))
  // The COPY sends the same bytes for the bytea as it did for the text; the canonical form prints it as \x….
  await own.superuser`alter table audit_events alter column ip type bytea using convert_to(ip, 'UTF8')`
  const counted = await copyCounting(t, own.url)
  const publicKey = createPublicKey(keys.publicPem)
  const streamed = await verifyAuditChain(counted.db, { publicKey })
  t.equal(counted.copies(), 0, 'no COPY: the types are not the ones the stream reader knows')
  t.equal(streamed.ok, false)
  t.same(streamed, await verifyAuditChain(counted.db, { publicKey, streaming: false }), 'the same first mismatch as the precise walk')
  t.match(streamed.firstMismatch, { reason: 'event_altered', position: 1 })
})

t.test('the streaming walk reads rows however its COPY streams are cut into chunks', async (t) => {
  const own = await ownDatabase(t)
  const key = auditSigningKey(sealerConfig(tempDir(t), auditKeys())).privateKey
  await seedEvents(own.superuser, 30)
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, { batchSize: 10, checkpointEveryEvents: 7, checkpointIntervalSeconds: 3600 }))
  const client = streamingClient(own.database.db)
  if (client === undefined) throw new Error('no streaming client')
  const [bound] = await own.superuser`select max(id)::text as id from audit_checkpoints`
  const input = { checkpointBoundId: bound?.id as string, fileCheckpoint: undefined }
  // The same client, with each COPY stream re-cut into pieces of 1 to 700 bytes (the reader may
  // take two together, as a stream hands over what it has buffered): rows, their fields, and the
  // header split anywhere, several rows in one piece too. (The
  // original streams are read whole first: a trail this small never fills their buffers, so
  // postgres.js never pauses its socket for them.)
  const sizes = [1, 2, 3, 5, 7, 11, 64, 700]
  const recut = async (original: Readable) => {
    const bytes = Buffer.concat(await original.toArray() as Buffer[])
    let at = 0
    let piece = 0
    return new Readable({
      highWaterMark: 1,
      read () {
        if (at >= bytes.length) { this.push(null); return }
        const size = sizes[piece++ % sizes.length] as number
        this.push(bytes.subarray(at, at + size))
        at += size
      }
    })
  }
  // The walk only reserves connections, runs `unsafe` on them and releases them.
  const recutClient = {
    reserve: async () => {
      const connection = await client.reserve()
      return {
        unsafe: (query: string, parameters?: never[]) => {
          const result = connection.unsafe(query, parameters)
          return /^\s*copy \(/i.test(query) ? { readable: async () => await recut(await result.readable()) } : result
        },
        release: () => { connection.release() }
      }
    }
  } as unknown as typeof client
  const whole = await walkChainStreaming(client, input)
  t.same(await walkChainStreaming(recutClient, input), whole, 'an intact trail: the same state as from whole messages')
  t.match(whole, { complete: true, state: { position: 30, lastGoodCheckpoint: 30 } })

  await tamper(own, async (sql) => { await sql`update audit_events set ip = '10.0.0.2' where id = (select event_id from audit_seals where position = 17)` })
  const tampered = await walkChainStreaming(client, input)
  t.same(await walkChainStreaming(recutClient, input), tampered, 'a tampered trail: the same last good position')
  t.match(tampered, { complete: false, state: { position: 16, lastGoodCheckpoint: 10 } })
})

/** A trail of `count` sealed events, checkpointed every 10, with an API on it and a platform auditor. */
async function sealedTrail (t: Test, count = 35) {
  const own = await ownDatabase(t)
  const dir = tempDir(t)
  const keys = auditKeys()
  const config = sealerConfig(dir, keys)
  const h = await buildHarness(t, { env: { DATABASE_URL: own.url, HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: config.checkpointFile } })
  const auditor = await signedIn(h, ['platform_auditor'])
  await seedEvents(own.superuser, count)
  const sealer = startSealer({ database: own.database, config, log: silentLog, batchSize: 10, idleMs: 10 })
  await untilSealed(own)
  await sealer.stop()
  const verify = async () => {
    const res = await auditor.request({ method: 'GET', url: '/v1/audit/verify' })
    t.equal(res.statusCode, 200)
    return res.json<{ ok: boolean, checked: number, sealedThrough: number, firstMismatch: { reason: string, position: number | null, eventId: string | null, detail: string } | null }>()
  }
  return { own, dir, keys, config, h, auditor, verify }
}


/**
 * Waits until every committed event is sealed. A transaction open in this database (the API's, a
 * test's) can hold the horizon back for a moment; one in another database no longer does.
 */
async function untilSealed (own: OwnDatabase, seal?: () => Promise<unknown>) {
  const deadline = Date.now() + 20_000
  for (;;) {
    if (seal !== undefined) await seal()
    const [row] = await own.superuser`select (select count(*) from audit_events) - (select count(*) from audit_seals) as unsealed`
    if (Number(row?.unsealed) === 0) return
    if (Date.now() > deadline) throw new Error('events were left unsealed')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Seals with `sealAuditBatch` until it has sealed something (or `expectNothing`), retrying while the horizon is held back. */
async function sealSome (own: OwnDatabase, seal: () => Promise<{ sealed: number, checkpoint: { size: number } | null }>) {
  const deadline = Date.now() + 20_000
  for (;;) {
    const batch = await seal()
    const [row] = await own.superuser`select (select count(*) from audit_events) - (select count(*) from audit_seals) as unsealed`
    if (batch.sealed > 0 || Number(row?.unsealed) === 0 || Date.now() > deadline) return batch
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

t.test('a sealed trail verifies, through the API and against both checkpoint copies', async (t) => {
  const { own, keys, config, verify } = await sealedTrail(t)
  const result = await verify()
  t.equal(result.ok, true)
  t.equal(result.firstMismatch, null)
  t.ok(result.sealedThrough >= 35)
  t.equal(result.checked, result.sealedThrough)
  const file = await readFileCheckpoints(config.checkpointFile)
  t.ok(file.length >= 3, 'checkpoints were appended to the file sink')
  const publicKey = createPublicKey(keys.publicPem)
  t.ok(file.every((c) => checkpointSignatureValid(publicKey, c)), 'every file checkpoint is signed by the configured key')
  const rows = await own.superuser`select size from audit_checkpoints order by id`
  t.same(rows.map((r) => Number(r.size)), file.map((c) => c.size), 'the database and the file hold the same checkpoints')
})

t.test('the sealer never skips a transaction that commits late, and seals in commit order', async (t) => {
  const own = await ownDatabase(t)
  const keys = auditKeys()
  const key = auditSigningKey(sealerConfig(tempDir(t), keys)).privateKey
  const policy = { batchSize: 100, checkpointEveryEvents: 1000, checkpointIntervalSeconds: 3600 }
  const late = own.superuser
  const other = (await import('postgres')).default(own.url, { max: 1, onnotice: () => {} })
  t.teardown(async () => { await other.end() })
  let commitLate!: () => void
  const lateCommitted = late.begin(async (tx) => {
    await tx`insert into audit_events (action, outcome, request_id) values ('referral.read', 'success', 'late')`
    await new Promise<void>((resolve) => { commitLate = resolve })
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  await other`insert into audit_events (action, outcome, request_id) values ('referral.read', 'success', 'early-1')`
  await other`insert into audit_events (action, outcome, request_id) values ('referral.read', 'success', 'early-2')`
  const first = await sealAuditBatch(own.database.db, key, policy)
  t.equal(first.sealed, 0, 'nothing is sealed past a transaction still in flight: its event would land before them')
  commitLate()
  await lateCommitted
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, policy))
  const order = await own.superuser`select e.request_id from audit_seals s join audit_events e on e.id = s.event_id order by s.position`
  t.same(order.map((r) => r.request_id), ['late', 'early-1', 'early-2'], 'the late event is sealed first: its transaction began first')
  t.ok((await verifyAuditChain(own.database.db, { publicKey: createPublicKey(keys.publicPem) })).ok)
})

t.test('an open transaction in another database no longer holds the sealer back; one in this database still does, seen by haven_app', async (t) => {
  const own = await ownDatabase(t)
  await own.superuser.file(new URL('../../infra/sql/least-privilege.sql', import.meta.url).pathname)
  const login = `haven_app_test_${randomBytes(4).toString('hex')}`
  await own.superuser.unsafe(`create role ${login} login in role haven_app`)
  t.teardown(async () => { await own.superuser.unsafe(`drop role if exists ${login}`) })
  const url = new URL(own.url)
  url.username = login
  const { openDatabase } = await import('@haven/schema')
  const worker = await openDatabase({ url: url.toString(), max: 2 })
  t.teardown(async () => { await worker.close() })
  const key = auditSigningKey(sealerConfig(tempDir(t), auditKeys())).privateKey
  const policy = { batchSize: 100, checkpointEveryEvents: 1000, checkpointIntervalSeconds: 3600 }
  const postgres = (await import('postgres')).default

  // A transaction with an xid, open in another database on the same server.
  const elsewhere = postgres(serverUrl, { max: 1, onnotice: () => {} })
  t.teardown(async () => { await elsewhere.end() })
  let endElsewhere!: () => void
  const elsewhereDone = elsewhere.begin(async (tx) => {
    await tx`select pg_current_xact_id()`
    await new Promise<void>((resolve) => { endElsewhere = resolve })
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  await seedEvents(own.superuser, 3)
  const [held] = await own.superuser`select pg_snapshot_xmin(pg_current_snapshot())::text as xmin, (select max(xid)::text from audit_events) as xid`
  t.ok(BigInt(String(held?.xid)) >= BigInt(String(held?.xmin)), 'the cluster-wide horizon is held below the events by the other database\'s transaction')
  t.equal((await sealAuditBatch(worker.db, key, policy)).sealed, 3, 'this database\'s events are sealed all the same')

  // A transaction of another role in this database: haven_app sees its xid and waits for it.
  let commitLate!: () => void
  const lateCommitted = own.superuser.begin(async (tx) => {
    await tx`insert into audit_events (action, outcome, request_id) values ('referral.read', 'success', 'late')`
    await new Promise<void>((resolve) => { commitLate = resolve })
  })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const early = postgres(own.url, { max: 1, onnotice: () => {} })
  t.teardown(async () => { await early.end() })
  await early`insert into audit_events (action, outcome, request_id) values ('referral.read', 'success', 'early')`
  t.equal((await sealAuditBatch(worker.db, key, policy)).sealed, 0, 'nothing past a transaction of this database still in flight')
  commitLate()
  await lateCommitted
  t.equal((await sealAuditBatch(worker.db, key, policy)).sealed, 2)
  const order = await own.superuser`select e.request_id from audit_seals s join audit_events e on e.id = s.event_id where s.position > 3 order by s.position`
  t.same(order.map((r) => r.request_id), ['late', 'early'], 'in commit order')
  endElsewhere()
  await elsewhereDone
})

t.test('exactly one sealer at a time: the advisory lock, and two sealers racing build one chain', async (t) => {
  const own = await ownDatabase(t)
  const dir = tempDir(t)
  const keys = auditKeys()
  const config = sealerConfig(dir, keys, { checkpointEveryEvents: 50 })
  const key = auditSigningKey(config).privateKey
  const policy = { batchSize: 100, checkpointEveryEvents: 50, checkpointIntervalSeconds: 3600 }
  await seedEvents(own.superuser, 10)
  await own.superuser.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${sealerLockKey})`
    const batch = await sealAuditBatch(own.database.db, key, policy)
    t.same(batch, { sealed: 0, busy: true, checkpoint: null }, 'a second sealer steps aside while one holds the lock')
  })
  const { openDatabase } = await import('@haven/schema')
  const second = await openDatabase({ url: own.url, max: 2 })
  t.teardown(async () => { await second.close() })
  const sealers = [
    startSealer({ database: own.database, config, log: silentLog, batchSize: 7, idleMs: 5 }),
    startSealer({ database: second, config, log: silentLog, batchSize: 7, idleMs: 5 })
  ]
  for (let i = 0; i < 20; i++) await seedEvents(own.superuser, 25)
  await untilSealed(own)
  await Promise.all(sealers.map(async (s) => { await s.stop() }))
  const [counts] = await own.superuser`select count(*)::int as seals, max(position)::int as top, (select count(*)::int from audit_events) as events from audit_seals`
  t.same(counts, { seals: 510, top: 510, events: 510 }, 'every event sealed once, positions without gaps')
  const result = await verifyAuditChain(own.database.db, { publicKey: createPublicKey(keys.publicPem), checkpointFile: config.checkpointFile })
  t.equal(result.ok, true, 'the chain two sealers built verifies')
})

t.test('the sealer gives way to the worker\'s notifications, for maxYieldMs at most', async (t) => {
  const own = await ownDatabase(t)
  const config = sealerConfig(tempDir(t), auditKeys())
  const unsealed = async () => Number((await own.superuser`select (select count(*) from audit_events) - (select count(*) from audit_seals) as n`)[0]?.n)
  const pause = async (ms: number) => { await new Promise((resolve) => setTimeout(resolve, ms)) }
  await seedEvents(own.superuser, 5)

  let notifying = true
  let asked = 0
  const patient = startSealer({ database: own.database, config, log: silentLog, idleMs: 10, yieldTo: () => { asked++; return notifying }, maxYieldMs: 60_000 })
  t.teardown(async () => { await patient.stop() })
  await pause(300)
  t.equal(await unsealed(), 5, 'nothing is sealed while notifications are in hand')
  notifying = false
  const freed = Date.now()
  await untilSealed(own)
  t.ok(Date.now() - freed < 10_000, 'sealed once they are done, not after maxYieldMs')
  // Giving way again before the next events come: asked twice since, it is waiting, past any pass.
  notifying = true
  const since = asked
  while (asked < since + 2) await pause(5)
  await seedEvents(own.superuser, 3)
  await pause(100)
  await patient.stop()
  t.equal(await unsealed(), 3, 'stopped while giving way, it seals nothing more')

  await seedEvents(own.superuser, 5)
  const started = Date.now()
  const bounded = startSealer({ database: own.database, config, log: silentLog, idleMs: 10, yieldTo: () => true, maxYieldMs: 400 })
  t.teardown(async () => { await bounded.stop() })
  await untilSealed(own)
  const waited = Date.now() - started
  t.ok(waited >= 400 && waited < 10_000, `sealed after waiting maxYieldMs, not forever (${waited} ms)`)
})

t.test('work in hand: jobs running, and a grace after any work, failed or not, and after the start', async (t) => {
  let clock = 1000
  const work = workInHand(100, () => clock)
  t.equal(work.busy(), true, 'busy for the grace from the start: the first relay claim is in flight')
  clock += 100
  t.equal(work.busy(), false)
  let finish = () => {}
  const job = work.track(async () => { await new Promise<void>((resolve) => { finish = resolve }) })
  clock += 1000
  t.equal(work.busy(), true, 'while a job runs, however long')
  finish()
  await job
  clock += 99
  t.equal(work.busy(), true, 'and for the grace after it ends')
  clock += 1
  t.equal(work.busy(), false)
  await t.rejects(work.track(async () => { throw new Error('failed') }))
  clock += 100
  t.equal(work.busy(), false, 'a job that throws is no longer counted')
  work.done()
  t.equal(work.busy(), true, 'the relay handing messages over counts')
})

t.test('checkpoints every M events or every N seconds, and only when the chain grew', async (t) => {
  const own = await ownDatabase(t)
  const keys = auditKeys()
  const key = auditSigningKey(sealerConfig(tempDir(t), keys)).privateKey
  const policy = { batchSize: 10, checkpointEveryEvents: 20, checkpointIntervalSeconds: 60 }
  await seedEvents(own.superuser, 45)
  const start = Date.now()
  const at = (seconds: number) => () => new Date(start + seconds * 1000)
  const sizes = []
  const seal = async (seconds: number) => await sealSome(own, async () => await sealAuditBatch(own.database.db, key, policy, at(seconds)))
  for (const seconds of [0, 1, 2, 3, 4]) sizes.push((await seal(seconds)).checkpoint?.size ?? null)
  t.same(sizes, [10, null, 30, null, null], 'the first batch, then every 20 events')
  t.equal((await seal(30)).checkpoint, null, 'not yet: 30 s since the last one')
  t.equal((await seal(63)).checkpoint?.size, 45, 'a minute after the last one, the sealed tail gets its checkpoint')
  t.equal((await seal(200)).checkpoint, null, 'nothing new sealed: no new checkpoint')
})

t.test('key rotation: with the old and the new public key listed, checkpoints signed by either verify', async (t) => {
  const own = await ownDatabase(t)
  const dir = tempDir(t)
  const [oldKeys, newKeys] = [auditKeys(), auditKeys()]
  const policy = { batchSize: 100, checkpointEveryEvents: 10, checkpointIntervalSeconds: 3600 }
  const sealWith = async (keys: typeof oldKeys) => {
    const key = auditSigningKey(sealerConfig(dir, keys)).privateKey
    await untilSealed(own, async () => await sealAuditBatch(own.database.db, key, policy))
  }
  const { readEd25519PublicKeys } = await import('@haven/schema')
  const listed = readEd25519PublicKeys({ pem: (oldKeys.publicPem + newKeys.publicPem).replaceAll('\n', '\\n'), variable: 'HAVEN_AUDIT_PUBLIC_KEY', file: '', env: 'production' })
  t.equal(listed.length, 2, 'PEM blocks one after another, as an environment variable with escaped newlines')
  const only = (keys: typeof oldKeys) => [createPublicKey(keys.publicPem)]

  await seedEvents(own.superuser, 15)
  await sealWith(oldKeys)
  t.match((await verifyAuditChain(own.database.db, { publicKey: only(newKeys) })).firstMismatch, { reason: 'checkpoint_signature' },
    'the new key alone rejects the checkpoints signed before the switch')
  t.equal((await verifyAuditChain(own.database.db, { publicKey: listed })).ok, true, 'both listed: the old checkpoints verify')
  await seedEvents(own.superuser, 15)
  await sealWith(newKeys)
  t.equal((await verifyAuditChain(own.database.db, { publicKey: listed })).ok, true, 'and so do those the new key signed after the switch')
  t.match((await verifyAuditChain(own.database.db, { publicKey: only(oldKeys) })).firstMismatch, { reason: 'checkpoint_signature' },
    'the old key alone rejects the new checkpoints')
  t.same(readEd25519PublicKeys({ pem: undefined, variable: 'HAVEN_AUDIT_PUBLIC_KEY', file: join(dir, 'none.pem'), env: 'test' }), [], 'no key configured or created: none')
})

t.test('audit tables refuse UPDATE, DELETE and TRUNCATE, even to a superuser, while the triggers are on', async (t) => {
  const { own } = await sealedTrail(t, 5)
  for (const table of ['audit_events', 'audit_seals', 'audit_checkpoints']) {
    const column = table === 'audit_events' ? 'ip' : table === 'audit_seals' ? 'event_hash' : 'head_hash'
    await t.rejects(own.superuser.unsafe(`update ${table} set ${column} = 'x'`), { message: /append-only/ }, `${table}: update`)
    await t.rejects(own.superuser.unsafe(`delete from ${table}`), { message: /append-only/ }, `${table}: delete`)
    await t.rejects(own.superuser.unsafe(`truncate ${table}`), { message: /append-only/ }, `${table}: truncate`)
  }
})

/** What a superuser can still do: switch the triggers off for a session. */
const tamper = async (own: OwnDatabase, statements: (sql: OwnDatabase['superuser']) => Promise<unknown>) => {
  await own.superuser.begin(async (tx) => {
    await tx`set local session_replication_role = replica`
    await statements(tx as unknown as OwnDatabase['superuser'])
  })
}

const positionOf = async (own: OwnDatabase, position: number) =>
  (await own.superuser`select event_id::text as id from audit_seals where position = ${position}`)[0]?.id as string

t.test('tampering: an event edited in place is named', async (t) => {
  const { own, verify } = await sealedTrail(t)
  const victim = await positionOf(own, 17)
  await tamper(own, async (sql) => { await sql`update audit_events set actor_user_id = gen_random_uuid() where id = ${victim}` })
  const result = await verify()
  t.equal(result.ok, false)
  t.match(result.firstMismatch, { reason: 'event_altered', position: 17, eventId: victim })
})

t.test('tampering: an event deleted and everything after it re-chained is caught by the checkpoints', async (t) => {
  const { own, dir, config, verify } = await sealedTrail(t)
  const victim = await positionOf(own, 12)
  // The attacker has the code but not the signing key, and writes no checkpoint of their own.
  const attacker = auditSigningKey(sealerConfig(dir, auditKeys())).privateKey
  await tamper(own, async (sql) => {
    await sql`delete from audit_events where id = ${victim}`
    await sql`delete from audit_seals where position >= 12`
  })
  const quiet = { batchSize: 100, checkpointEveryEvents: 1e9, checkpointIntervalSeconds: 1e9 }
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, attacker, quiet))
  const result = await verify()
  // Not an event or seal mismatch: the re-chained seals agree with the events; only the signatures can tell.
  t.match(result.firstMismatch, { reason: 'checkpoint_mismatch', position: 20 }, 'the first signed checkpoint after the deletion no longer matches')
  t.match(result.firstMismatch?.detail, /after 10 and up to 20/)

  // The attacker also removes the database's checkpoints after the deletion: the file sink still has them.
  await tamper(own, async (sql) => { await sql`delete from audit_checkpoints where size >= 12` })
  const fileOnly = await verify()
  t.equal(fileOnly.ok, false)
  t.match(fileOnly.firstMismatch, { reason: /checkpoint_mismatch|checkpoint_beyond_chain/ })
  t.match(fileOnly.firstMismatch?.detail, /file sink/)
  t.ok(readFileSync(config.checkpointFile, 'utf8').includes(`"size":20`), 'the file sink was out of the attacker\'s reach')
})

t.test('tampering: an event inserted into the past is caught, however it is slipped in', async (t) => {
  const { own, dir, verify } = await sealedTrail(t)
  const attacker = auditSigningKey(sealerConfig(dir, auditKeys())).privateKey
  const quiet = { batchSize: 100, checkpointEveryEvents: 1e9, checkpointIntervalSeconds: 1e9 }
  const [early] = await own.superuser`select xid::text as xid, seq from audit_events e join audit_seals s on s.event_id = e.id where s.position = 5`
  const [forged] = await own.superuser`
    insert into audit_events (seq, xid, occurred_at, action, outcome, request_id)
    overriding system value
    values (1000000, ${String(BigInt(String(early?.xid)) - 1n)}::xid8, now() - interval '1 day', 'referral.read', 'success', 'forged')
    returning id::text as id`
  await sealAuditBatch(own.database.db, attacker, quiet)
  t.equal((await own.superuser`select 1 from audit_seals where event_id = ${forged?.id ?? ''}`).length, 0, 'the sealer has passed its place: it stays unsealed')
  const unsealed = await verify()
  t.match(unsealed.firstMismatch, { reason: 'unsealed_event', eventId: forged?.id }, 'left unsealed: the sealer has passed its place')

  // Appended to the end of the chain: the chain is consistent, but not in commit order.
  const [head] = await own.superuser`select position, chain_hash from audit_seals order by position desc limit 1`
  const [row] = await own.superuser`select ${own.superuser.unsafe(chainColumnsText)} from audit_events e where e.id = ${forged?.id ?? ''}`
  const hash = eventHash(toChainEvent(row as never))
  await tamper(own, async (sql) => {
    await sql`insert into audit_seals (position, event_id, event_hash, chain_hash, horizon)
      values (${Number(head?.position) + 1}, ${forged?.id ?? ''}, ${hash}, ${chainHash(String(head?.chain_hash), hash)}, pg_snapshot_xmin(pg_current_snapshot()))`
  })
  const appended = await verify()
  t.match(appended.firstMismatch, { reason: 'out_of_order', eventId: forged?.id }, 'sealed at the end: out of commit order')

  // Spliced into its place and everything after re-chained: the checkpoints catch it.
  await tamper(own, async (sql) => { await sql`delete from audit_seals` })
  await untilSealed(own, async () => await sealAuditBatch(own.database.db, attacker, quiet))
  const spliced = await verify()
  t.match(spliced.firstMismatch, { reason: 'checkpoint_mismatch', position: 10 })
})

t.test('tampering: events cut from the end, and a forged checkpoint, are caught', async (t) => {
  const { own, verify } = await sealedTrail(t)
  await tamper(own, async (sql) => {
    await sql`delete from audit_events where id in (select event_id from audit_seals where position > 28)`
    await sql`delete from audit_seals where position > 28`
  })
  t.match((await verify()).firstMismatch, { reason: 'checkpoint_beyond_chain', position: 29 })

  const { own: other, verify: verifyOther } = await sealedTrail(t)
  await tamper(other, async (sql) => { await sql`update audit_checkpoints set head_hash = ${'ab'.repeat(32)} where size = 20` })
  t.match((await verifyOther()).firstMismatch, { reason: 'checkpoint_signature', position: 20 }, 'a checkpoint changed without the key')
})

const chainColumnsText = `e.id::text as id, e.seq::text as seq, e.xid::text as xid,
  to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as occurred_at,
  e.actor_user_id::text as actor_user_id, e.actor_agency_id::text as actor_agency_id,
  array_to_json(e.actor_roles)::text as actor_roles, e.action::text as action, e.outcome::text as outcome,
  e.referral_id::text as referral_id, e.target_type::text as target_type, e.target_id::text as target_id,
  e.recipient_agency_id::text as recipient_agency_id, e.purpose::text as purpose, e.request_id as request_id, e.ip as ip`

const runCli = async (env: Record<string, string>, args: string[] = []) => await new Promise<{ code: number | null, stdout: string, stderr: string }>((resolve) => {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'scripts/audit-verify.ts'), ...args], {
    cwd: root, env: { PATH: process.env.PATH ?? '', NODE_ENV: 'test', ...env }, stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  child.on('close', (code) => { resolve({ code, stdout, stderr }) })
})

t.test('pnpm audit:verify: a summary, exit 0 when the chain matches and non-zero naming the first mismatch', async (t) => {
  const { own, keys, config } = await sealedTrail(t)
  const env = { DATABASE_URL: own.url, HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: config.checkpointFile }
  const good = await runCli(env)
  t.equal(good.code, 0, good.stderr)
  t.match(good.stdout, /audit chain: OK/)
  t.match(good.stdout, /sealed through: +position \d+/)
  const [recorded] = await own.superuser`select count(*)::int as n from audit_events where action = 'audit.verify' and request_id = 'cli:audit-verify'`
  t.equal(recorded?.n, 1, 'the run is itself in the trail')

  const victim = await positionOf(own, 3)
  await tamper(own, async (sql) => { await sql`update audit_events set outcome = 'denied' where id = ${victim}` })
  const bad = await runCli(env)
  t.equal(bad.code, 1)
  t.match(bad.stdout, /MISMATCH/)
  t.match(bad.stdout, /event_altered/)
  t.match(bad.stdout, victim)
  const json = await runCli(env, ['--json'])
  t.equal(json.code, 1)
  t.match(JSON.parse(json.stdout), { ok: false, firstMismatch: { reason: 'event_altered', position: 3, eventId: victim } }, '--json: the same, for machines')
  const wrongKey = await runCli({ ...env, HAVEN_AUDIT_PUBLIC_KEY: auditKeys().publicPem })
  t.equal(wrongKey.code, 1, 'checkpoints signed by another key do not pass')
  t.match(wrongKey.stdout, /checkpoint_signature/)
})

t.test('--every-signature: a line rewritten in the middle of the file sink is caught, not only a bad last line', async (t) => {
  const { own, keys, config } = await sealedTrail(t)
  const lines = readFileSync(config.checkpointFile, 'utf8').trimEnd().split('\n')
  t.ok(lines.length >= 3)
  const first = JSON.parse(lines[0] ?? '{}') as { size: number, signedAt: string }
  const rewritten = { ...first, signedAt: new Date(Date.parse(first.signedAt) - 1000).toISOString() }
  writeFileSync(config.checkpointFile, [JSON.stringify(rewritten), ...lines.slice(1), ''].join('\n'))
  const publicKey = createPublicKey(keys.publicPem)
  t.equal((await verifyAuditChain(own.database.db, { publicKey, checkpointFile: config.checkpointFile })).ok, true,
    'by default only the last line of the file is checked')
  t.match((await verifyAuditChain(own.database.db, { publicKey, checkpointFile: config.checkpointFile, everyFileSignature: true })).firstMismatch,
    { reason: 'checkpoint_signature', position: first.size })
  const env = { DATABASE_URL: own.url, HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: config.checkpointFile }
  const cli = await runCli(env, ['--every-signature'])
  t.equal(cli.code, 1)
  t.match(cli.stdout, /checkpoint_signature/)
})
