/**
 * infra/sql/least-privilege.sql, applied to a database of its own: the services' role appends to
 * and reads the audit trail and can do nothing else to it, by privilege (the triggers are a
 * second wall); and the API and the sealer work under it.
 */
import { randomBytes } from 'node:crypto'
import { openDatabase, verifyAuditChain } from '@haven/schema'
import { createPublicKey } from 'node:crypto'
import postgres from 'postgres'
import t from 'tap'
import { buildHarness, referralBodies, signedIn, makeAgency } from '../../services/api/test/helper.ts'
import { auditSigningKey, sealAuditBatch } from '../../services/worker/src/sealer.ts'
import { auditKeys, ownDatabase, sealerConfig, tempDir } from './audit-fixtures.ts'

const sqlFile = new URL('../../infra/sql/least-privilege.sql', import.meta.url).pathname

t.test('the services\' role: INSERT and SELECT on the audit trail, nothing else', async (t) => {
  const own = await ownDatabase(t)
  await own.superuser.file(sqlFile)
  await own.superuser.file(sqlFile)
  const login = `haven_app_test_${randomBytes(4).toString('hex')}`
  await own.superuser.unsafe(`create role ${login} login in role haven_app`)
  const url = new URL(own.url)
  url.username = login
  const app = postgres(url.toString(), { max: 1, onnotice: () => {} })
  t.teardown(async () => {
    await app.end()
    await own.superuser.unsafe(`drop role if exists ${login}`)
  })

  const [event] = await app`insert into audit_events (action, outcome) values ('audit.query', 'success') returning id`
  t.ok(event?.id, 'INSERT on audit_events')
  t.equal((await app`select count(*)::int as n from audit_events`)[0]?.n, 1, 'SELECT on audit_events')
  await app`insert into audit_seals (position, event_id, event_hash, chain_hash, horizon) values (1, ${event?.id as string}, 'h', 'c', '1')`
  await app`insert into audit_checkpoints (size, head_hash, signed_at, signature, public_key) values (1, 'c', now(), 's', 'k')`

  const denied = { code: '42501', message: /permission denied for table/ }
  const attempts = {
    audit_events: ['update audit_events set ip = null', 'delete from audit_events', 'truncate audit_events'],
    audit_seals: ['update audit_seals set chain_hash = \'x\'', 'delete from audit_seals', 'truncate audit_seals'],
    audit_checkpoints: ['update audit_checkpoints set size = 0', 'delete from audit_checkpoints', 'truncate audit_checkpoints']
  }
  for (const [table, statements] of Object.entries(attempts)) {
    for (const statement of statements) await t.rejects(app.unsafe(statement), denied, `${table}: ${statement.split(' ')[0] ?? ''} refused by privilege`)
  }
  // Privileges, not just the triggers: with the triggers off, the role is still refused.
  await own.superuser`alter table audit_events disable trigger user`
  await t.rejects(app`update audit_events set ip = null`, denied, 'refused with the triggers switched off')
  await t.rejects(app`delete from audit_events`, denied)
  await own.superuser`alter table audit_events enable trigger user`
  await t.rejects(app`alter table audit_events disable trigger user`, { code: '42501', message: /must be owner/ }, 'and it cannot switch the triggers off')
  await t.rejects(app`delete from referrals`, denied, 'it deletes nothing anywhere')
  await t.rejects(app`create table scratch (id int)`, { code: '42501' }, 'nor changes the schema')
})

t.test('the API and the sealer work as that role', async (t) => {
  const own = await ownDatabase(t)
  await own.superuser.file(sqlFile)
  const login = `haven_app_test_${randomBytes(4).toString('hex')}`
  await own.superuser.unsafe(`create role ${login} login in role haven_app`)
  const url = new URL(own.url)
  url.username = login
  const dir = tempDir(t)
  const keys = auditKeys()
  const h = await buildHarness(t, { env: { DATABASE_URL: url.toString(), HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: `${dir}/c.ndjson` } })
  t.teardown(async () => { await own.superuser.unsafe(`drop role if exists ${login}`) })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const referral = await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent() })
  t.equal(referral.statusCode, 201)
  const id = referral.json<{ id: string }>().id
  const share = await referrer.request({ method: 'POST', url: `/v1/referrals/${id}/shares`, payload: { agencyId: ngo.id } })
  t.equal(share.statusCode, 201)
  t.equal((await caseworker.request({ method: 'POST', url: `/v1/referrals/${id}/shares/${share.json<{ id: string }>().id}/accept` })).statusCode, 200)
  t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${id}/close`, payload: {} })).statusCode, 200)

  const worker = await openDatabase({ url: url.toString(), max: 2 })
  t.teardown(async () => { await worker.close() })
  const key = auditSigningKey(sealerConfig(dir, keys)).privateKey
  const deadline = Date.now() + 20_000
  let sealed = 0
  while (sealed === 0 && Date.now() < deadline) sealed = (await sealAuditBatch(worker.db, key, { batchSize: 1000, checkpointEveryEvents: 1, checkpointIntervalSeconds: 1 })).sealed
  t.ok(sealed > 0, 'the sealer seals and signs as haven_app')
  t.ok((await verifyAuditChain(worker.db, { publicKey: createPublicKey(keys.publicPem) })).ok)
  await t.rejects(worker.migrate(), { message: /CREATE SCHEMA/ }, 'migrations need the owner: the services\' role cannot run them')
})
