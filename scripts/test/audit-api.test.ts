/**
 * The auditors' API route by route: success, scope, filters, pagination, the streamed export (with
 * a memory bound over 100,000 events), verification, the latest checkpoint and the per-referral
 * access log; every refusal (401, 403, 404, 400 with paths), and the auditing of auditors.
 * One database of this file's own, so its sealer and checkpoints touch no other test.
 */
import { createPublicKey } from 'node:crypto'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { checkpointSignatureValid, type Role } from '@haven/schema'
import t, { type Test } from 'tap'
import { buildHarness, type Harness, makeAgency, referralBodies, signedIn } from '../../services/api/test/helper.ts'
import { auditSigningKey, sealAuditBatch } from '../../services/worker/src/sealer.ts'
import { auditKeys, ownDatabase, sealerConfig, seedEvents, tempDir } from './audit-fixtures.ts'

type SignedIn = Awaited<ReturnType<typeof signedIn>>
interface Event { id: string, occurredAt: string, actor: { userId: string | null, agencyId: string | null, roles: Role[] }, action: string, outcome: string, referralId: string | null, target: { type: string, id: string | null } | null, recipientAgencyId: string | null, purpose: string, requestId: string | null, ip: string | null, sealed: boolean }
interface Page { items: Event[], nextCursor: string | null }

const own = await ownDatabase(t)
const dir = tempDir(t)
const keys = auditKeys()
const config = sealerConfig(dir, keys)
const signingKey = auditSigningKey(config).privateKey
const h = await buildHarness(t, { env: { DATABASE_URL: own.url, HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: config.checkpointFile } })

/** Seals every committed event (retrying while another transaction on the server holds the horizon back). */
async function sealAll () {
  const deadline = Date.now() + 20_000
  for (;;) {
    await sealAuditBatch(own.database.db, signingKey, { batchSize: 5000, checkpointEveryEvents: 1, checkpointIntervalSeconds: 1 })
    const [row] = await own.superuser`select (select count(*) from audit_events) - (select count(*) from audit_seals) as unsealed`
    if (Number(row?.unsealed) === 0 || Date.now() > deadline) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

const get = async (caller: SignedIn, url: string) => await caller.request({ method: 'GET', url })
const eventsOf = async (caller: SignedIn, query = '') => {
  const res = await get(caller, `/v1/audit/events${query}`)
  if (res.statusCode !== 200) throw new Error(`${res.statusCode} ${res.body}`)
  return res.json<Page>()
}
/** The audit events one request wrote, by its request id. */
const writtenBy = async (requestId: string) =>
  await own.superuser`select action::text, outcome::text, referral_id::text, target_type::text, actor_user_id::text from audit_events where request_id = ${requestId} order by seq`

/**
 * Three agencies: police (origin of `referral`, shared with and accepted by the NGO) and an
 * unrelated council with a referral of its own. An auditor and an agency admin in each.
 */
async function scene (h: Harness) {
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const council = await makeAgency(h, { kind: 'local_authority' })
  const people = {
    referrer: await signedIn(h, ['referrer'], police.id),
    policeAuditor: await signedIn(h, ['auditor'], police.id),
    policeAdmin: await signedIn(h, ['agency_admin'], police.id),
    caseworker: await signedIn(h, ['caseworker'], ngo.id),
    ngoAuditor: await signedIn(h, ['auditor'], ngo.id),
    ngoAdmin: await signedIn(h, ['agency_admin'], ngo.id),
    councilReferrer: await signedIn(h, ['referrer'], council.id),
    platformAuditor: await signedIn(h, ['platform_auditor']),
    platformAdmin: await signedIn(h, ['platform_admin'])
  }
  const referral = (await people.referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent() })).json<{ id: string }>()
  const share = (await people.referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id, scopes: ['identity'] } })).json<{ id: string }>()
  await people.caseworker.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${share.id}/accept` })
  await get(people.caseworker, `/v1/referrals/${referral.id}`)
  const councilReferral = (await people.councilReferrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json<{ id: string }>()
  // The NGO's caseworker also reads a referral of its own agency's: not the police auditor's business.
  const ngoReferrer = await signedIn(h, ['referrer'], ngo.id)
  const ngoReferral = (await ngoReferrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.anonymous() })).json<{ id: string }>()
  await get(people.caseworker, `/v1/referrals/${ngoReferral.id}`)
  return { police, ngo, council, ...people, referral, share, councilReferral, ngoReferral }
}

const s = await scene(h)

t.test('GET /v1/audit/events', async (t) => {
  t.test('AuditEvent: exactly the contract\'s fields, references only', async (t) => {
    const page = await eventsOf(s.platformAuditor, `?referralId=${s.referral.id}&action=share.create`)
    t.equal(page.items.length, 1)
    const event = page.items[0]
    t.same(Object.keys(event ?? {}).sort(), ['action', 'actor', 'id', 'ip', 'occurredAt', 'outcome', 'purpose', 'recipientAgencyId', 'referralId', 'requestId', 'sealed', 'target'])
    t.match(event, {
      actor: { userId: s.referrer.user.id, agencyId: s.police.id, roles: ['referrer'] },
      action: 'share.create', outcome: 'success', referralId: s.referral.id, target: { type: 'share', id: s.share.id },
      recipientAgencyId: s.ngo.id, purpose: 'case_management', sealed: false
    })
    t.match(event?.occurredAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'to the microsecond, as hashed')
  })

  t.test('a platform auditor sees every agency\'s events', async (t) => {
    for (const agency of [s.police, s.ngo, s.council]) {
      const page = await eventsOf(s.platformAuditor, `?actorAgencyId=${agency.id}&limit=200`)
      t.ok(page.items.length > 0 && page.items.every((e) => e.actor.agencyId === agency.id), `events by ${agency.kind}`)
    }
  })

  t.test('an agency auditor sees events by its users and events on referrals its agency originated, nothing else', async (t) => {
    const seen = (await eventsOf(s.policeAuditor, '?limit=200')).items
    t.ok(seen.length > 0)
    t.ok(seen.every((e) => e.actor.agencyId === s.police.id || e.referralId === s.referral.id), 'all in scope')
    t.ok(seen.some((e) => e.actor.userId === s.caseworker.user.id && e.action === 'referral.read' && e.referralId === s.referral.id),
      'the recipient\'s read of the police referral: who saw this person\'s record')
    t.notOk(seen.some((e) => e.referralId === s.ngoReferral.id), 'not the NGO\'s own referral')
    t.notOk(seen.some((e) => e.actor.agencyId === s.council.id), 'not the council')
    t.same((await eventsOf(s.policeAuditor, `?referralId=${s.councilReferral.id}`)).items, [], 'a filter cannot widen the scope')

    const ngoSeen = (await eventsOf(s.ngoAuditor, '?limit=200')).items
    t.ok(ngoSeen.some((e) => e.actor.userId === s.caseworker.user.id && e.referralId === s.referral.id), 'its own users\' reads, on anyone\'s referral')
    t.notOk(ngoSeen.some((e) => e.action === 'referral.create' && e.referralId === s.referral.id), 'not the police officer\'s own events')
  })

  t.test('filters: actor, agency, referral, action, outcome, period', async (t) => {
    const byUser = await eventsOf(s.platformAuditor, `?actorUserId=${s.caseworker.user.id}&limit=200`)
    t.ok(byUser.items.length >= 3 && byUser.items.every((e) => e.actor.userId === s.caseworker.user.id))
    const reads = await eventsOf(s.platformAuditor, `?referralId=${s.referral.id}&action=referral.read`)
    t.same(reads.items.map((e) => e.actor.userId), [s.caseworker.user.id])
    await s.councilReferrer.request({ method: 'GET', url: `/v1/referrals/${s.referral.id}` })
    const denied = await eventsOf(s.platformAuditor, `?referralId=${s.referral.id}&outcome=denied`)
    t.same(denied.items.map((e) => [e.action, e.actor.userId]), [['referral.read', s.councilReferrer.user.id]], 'a refused look is on the record')
    // The police officer's events: fixed by now (the auditor's own queries would add to a referral's).
    const all = await eventsOf(s.platformAuditor, `?actorUserId=${s.referrer.user.id}&limit=200`)
    const middle = all.items[Math.floor(all.items.length / 2)]?.occurredAt ?? ''
    const from = await eventsOf(s.platformAuditor, `?actorUserId=${s.referrer.user.id}&from=${middle}&limit=200`)
    const to = await eventsOf(s.platformAuditor, `?actorUserId=${s.referrer.user.id}&to=${middle}&limit=200`)
    t.ok(from.items.every((e) => e.occurredAt >= middle) && to.items.every((e) => e.occurredAt < middle))
    t.equal(from.items.length + to.items.length, all.items.length, 'from is inclusive, to exclusive')
  })

  t.test('keyset pagination, newest first, stable under inserts', async (t) => {
    const walk: string[] = []
    let cursor: string | null = null
    let inserted = false
    do {
      const page: Page = await eventsOf(s.platformAuditor, `?actorAgencyId=${s.police.id}&limit=2${cursor !== null ? `&cursor=${cursor}` : ''}`)
      t.ok(page.items.length <= 2)
      walk.push(...page.items.map((e) => e.id))
      if (!inserted) {
        await get(s.referrer, `/v1/referrals/${s.referral.id}`)
        inserted = true
      }
      cursor = page.nextCursor
    } while (cursor !== null)
    const full = (await eventsOf(s.platformAuditor, `?actorAgencyId=${s.police.id}&limit=200`)).items.map((e) => e.id)
    t.equal(new Set(walk).size, walk.length, 'no event twice')
    t.same(walk, full.slice(1), 'every event once, in order; the one added meanwhile is on a page already passed')
  })

  t.test('sealed: false until the sealer has chained the event, then true', async (t) => {
    const before = await eventsOf(s.platformAuditor, `?referralId=${s.referral.id}&action=referral.create`)
    t.equal(before.items[0]?.sealed, false)
    await sealAll()
    const after = await eventsOf(s.platformAuditor, `?referralId=${s.referral.id}&action=referral.create`)
    t.equal(after.items[0]?.sealed, true)
  })

  t.test('the auditor\'s query is itself audited, with the referral it asked about', async (t) => {
    const res = await s.policeAuditor.request({ method: 'GET', url: `/v1/audit/events?referralId=${s.referral.id}`, headers: { 'haven-purpose': 'audit' } })
    t.equal(res.statusCode, 200)
    t.same(await writtenBy(res.headers['x-request-id'] as string), [{ action: 'audit.query', outcome: 'success', referral_id: s.referral.id, target_type: 'audit', actor_user_id: s.policeAuditor.user.id }])
    t.equal(res.headers['cache-control'], 'no-store')
  })

  t.test('refusals: 401 signed out; 403 for every role but the auditors, audited as denied; 400 with paths', async (t) => {
    t.equal((await h.app.inject({ method: 'GET', url: '/v1/audit/events' })).statusCode, 401)
    for (const caller of [s.referrer, s.caseworker, s.policeAdmin, s.platformAdmin]) {
      const res = await get(caller, '/v1/audit/events')
      t.equal(res.statusCode, 403)
      t.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8')
      t.same(await writtenBy(res.headers['x-request-id'] as string), [{ action: 'audit.query', outcome: 'denied', referral_id: null, target_type: 'audit', actor_user_id: caller.user.id }])
    }
    const bad = {
      '?limit=0': '/querystring/limit', '?limit=201': '/querystring/limit', '?actorUserId=nope': '/querystring/actorUserId',
      '?action=referral.delete': '/querystring/action', '?outcome=maybe': '/querystring/outcome', '?from=yesterday': '/querystring/from',
      '?colour=red': '/querystring/colour', '?cursor=forged': '/querystring/cursor',
      '?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z': '/querystring/to'
    }
    for (const [query, path] of Object.entries(bad)) {
      const res = await get(s.platformAuditor, `/v1/audit/events${query}`)
      t.equal(res.statusCode, 400, query)
      t.ok(res.json<{ errors: { path: string }[] }>().errors.some((e) => e.path === path), `${query} names ${path}`)
    }
  })
})

t.test('GET /v1/referrals/:id/access-log', async (t) => {
  t.test('the origin\'s auditor and agency admin and any platform auditor read who did what to the referral', async (t) => {
    for (const caller of [s.policeAuditor, s.policeAdmin, s.platformAuditor]) {
      const res = await get(caller, `/v1/referrals/${s.referral.id}/access-log?limit=200`)
      t.equal(res.statusCode, 200)
      const page = res.json<Page>()
      t.ok(page.items.length >= 4 && page.items.every((e) => e.referralId === s.referral.id))
      t.ok(page.items.some((e) => e.action === 'referral.read' && e.actor.agencyId === s.ngo.id), 'the recipient\'s read is there')
      t.same(await writtenBy(res.headers['x-request-id'] as string), [{ action: 'audit.query', outcome: 'success', referral_id: s.referral.id, target_type: 'referral', actor_user_id: caller.user.id }])
    }
    const first = (await get(s.platformAuditor, `/v1/referrals/${s.referral.id}/access-log?limit=1`)).json<Page>()
    t.equal(first.items.length, 1)
    const second = (await get(s.platformAuditor, `/v1/referrals/${s.referral.id}/access-log?limit=1&cursor=${first.nextCursor ?? ''}`)).json<Page>()
    t.not(second.items[0]?.id, first.items[0]?.id, 'paginated')
  })

  t.test('refusals: 404 outside the caller\'s agency or unknown, 403 for other roles, 401, 400; audited', async (t) => {
    for (const caller of [s.ngoAuditor, s.ngoAdmin]) {
      const res = await get(caller, `/v1/referrals/${s.referral.id}/access-log`)
      t.equal(res.statusCode, 404, 'another agency\'s referral does not exist for it')
      t.same(await writtenBy(res.headers['x-request-id'] as string), [{ action: 'audit.query', outcome: 'denied', referral_id: s.referral.id, target_type: 'referral', actor_user_id: caller.user.id }])
    }
    const unknown = await get(s.platformAuditor, '/v1/referrals/00000000-0000-4000-8000-000000000000/access-log')
    t.equal(unknown.statusCode, 404)
    t.same((await writtenBy(unknown.headers['x-request-id'] as string)).map((e) => [e.outcome, e.referral_id]), [['denied', null]])
    for (const caller of [s.referrer, s.caseworker, s.platformAdmin]) {
      const res = await get(caller, `/v1/referrals/${s.referral.id}/access-log`)
      t.equal(res.statusCode, 403)
      t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.query', 'denied']])
    }
    t.equal((await h.app.inject({ method: 'GET', url: `/v1/referrals/${s.referral.id}/access-log` })).statusCode, 401)
    for (const [url, path] of [['/v1/referrals/nope/access-log', '/params/id'], [`/v1/referrals/${s.referral.id}/access-log?limit=500`, '/querystring/limit'], [`/v1/referrals/${s.referral.id}/access-log?cursor=abc`, '/querystring/cursor']]) {
      const bad = await get(s.platformAuditor, url ?? '')
      t.equal(bad.statusCode, 400)
      t.same(bad.json<{ errors: { path: string }[] }>().errors.map((e) => e.path), [path])
    }
  })
})

t.test('GET /v1/audit/checkpoints/latest and GET /v1/audit/verify', async (t) => {
  t.test('the latest checkpoint, signed by the configured key', async (t) => {
    await sealAll()
    for (const caller of [s.policeAuditor, s.platformAuditor]) {
      const res = await get(caller, '/v1/audit/checkpoints/latest')
      t.equal(res.statusCode, 200)
      const checkpoint = res.json<{ size: number, headHash: string, signedAt: string, signature: string, publicKey: string }>()
      t.same(Object.keys(checkpoint).sort(), ['headHash', 'publicKey', 'signature', 'signedAt', 'size'])
      t.ok(checkpointSignatureValid(createPublicKey(keys.publicPem), checkpoint))
      t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.query', 'success']])
    }
  })

  t.test('verify: the platform auditor\'s, audited', async (t) => {
    const res = await get(s.platformAuditor, '/v1/audit/verify')
    t.equal(res.statusCode, 200)
    const result = res.json<{ ok: boolean, checked: number, sealedThrough: number, firstMismatch: unknown, checkpoints: { database: { size: number } | null, file: { size: number } | null } }>()
    t.match(result, { ok: true, firstMismatch: null })
    t.equal(result.checked, result.sealedThrough)
    t.ok(result.checkpoints.database !== null && result.checkpoints.file === null, 'this test wrote no file sink: only the database\'s checkpoints')
    t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.verify', 'success']])
  })

  t.test('refusals: 403 audited as denied, 401', async (t) => {
    for (const caller of [s.policeAuditor, s.referrer, s.platformAdmin]) {
      const res = await get(caller, '/v1/audit/verify')
      t.equal(res.statusCode, 403)
      t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.verify', 'denied']])
    }
    for (const caller of [s.referrer, s.caseworker, s.policeAdmin]) {
      const res = await get(caller, '/v1/audit/checkpoints/latest')
      t.equal(res.statusCode, 403)
      t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.query', 'denied']])
    }
    t.equal((await h.app.inject({ method: 'GET', url: '/v1/audit/verify' })).statusCode, 401)
    t.equal((await h.app.inject({ method: 'GET', url: '/v1/audit/checkpoints/latest' })).statusCode, 401)
    t.equal((await get(s.platformAuditor, '/v1/audit/verify?full=1')).statusCode, 200, 'unknown query parameters are ignored here: the route takes none')
  })

  t.test('404 when no checkpoint has been signed yet', async (t) => {
    const fresh = await ownDatabase(t)
    const empty = await buildHarness(t, { env: { DATABASE_URL: fresh.url, HAVEN_AUDIT_PUBLIC_KEY: keys.publicPem, HAVEN_CHECKPOINT_FILE: `${dir}/none.ndjson` } })
    const auditor = await signedIn(empty, ['auditor'])
    const res = await get(auditor, '/v1/audit/checkpoints/latest')
    t.equal(res.statusCode, 404)
    t.match(res.json(), { status: 404, detail: /No checkpoint/ })
  })
})

t.test('GET /v1/audit/events/export', async (t) => {
  t.test('NDJSON and CSV of the caller\'s scope, oldest first, audited', async (t) => {
    const ndjson = await get(s.policeAuditor, `/v1/audit/events/export?referralId=${s.referral.id}`)
    t.equal(ndjson.statusCode, 200)
    t.match(ndjson.headers['content-type'], /^application\/x-ndjson/)
    t.match(ndjson.headers['content-disposition'], /^attachment; filename="haven-audit-.*\.ndjson"$/)
    t.equal(ndjson.headers['cache-control'], 'no-store')
    const lines = ndjson.body.trim().split('\n').map((line) => JSON.parse(line) as Event)
    const listed = (await eventsOf(s.policeAuditor, `?referralId=${s.referral.id}&limit=200`)).items
    t.same(lines.map((e) => e.id), listed.slice(1).map((e) => e.id).reverse(), 'the same events as the list, oldest first, up to the moment of asking')
    t.same(await writtenBy(ndjson.headers['x-request-id'] as string), [{ action: 'audit.export', outcome: 'success', referral_id: s.referral.id, target_type: 'audit', actor_user_id: s.policeAuditor.user.id }])

    const csv = await get(s.platformAuditor, `/v1/audit/events/export?format=csv&referralId=${s.referral.id}&action=share.create`)
    t.equal(csv.statusCode, 200)
    t.match(csv.headers['content-type'], /^text\/csv/)
    const [header, row, end] = csv.body.split('\r\n')
    t.equal(header, 'id,occurredAt,actorUserId,actorAgencyId,actorRoles,action,outcome,referralId,targetType,targetId,recipientAgencyId,purpose,requestId,ip,sealed')
    t.match(row, new RegExp(`^[0-9a-f-]{36},[^,]+,${s.referrer.user.id},${s.police.id},referrer,share.create,success,${s.referral.id},share,${s.share.id},${s.ngo.id},case_management,`))
    t.equal(end, '')
  })

  t.test('a cell a spreadsheet would run as a formula is defused', async (t) => {
    const res = await s.referrer.request({ method: 'GET', url: `/v1/referrals/${s.referral.id}`, headers: { 'x-request-id': '-2-3' } })
    t.equal(res.statusCode, 200)
    const csv = await get(s.platformAuditor, `/v1/audit/events/export?format=csv&actorUserId=${s.referrer.user.id}&action=referral.read`)
    t.match(csv.body, /,'-2-3,/)
  })

  t.test('refusals: 403 audited, 401, 400', async (t) => {
    const res = await get(s.policeAdmin, '/v1/audit/events/export')
    t.equal(res.statusCode, 403)
    t.same((await writtenBy(res.headers['x-request-id'] as string)).map((e) => [e.action, e.outcome]), [['audit.export', 'denied']])
    t.equal((await h.app.inject({ method: 'GET', url: '/v1/audit/events/export' })).statusCode, 401)
    const bad = await get(s.platformAuditor, '/v1/audit/events/export?format=xml&limit=5')
    t.equal(bad.statusCode, 400)
    t.same(bad.json<{ errors: { path: string }[] }>().errors.map((e) => e.path).sort(), ['/querystring/format', '/querystring/limit'])
  })

  t.test('100,000 events stream out with flat memory', async (t: Test) => {
    const agency = await makeAgency(h)
    await seedEvents(own.superuser, 100_000, { actorAgencyId: agency.id })
    await h.app.listen({ port: 0, host: '127.0.0.1' })
    const address = h.app.server.address()
    const port = typeof address === 'object' && address !== null ? address.port : 0
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    gc()
    const baseline = process.memoryUsage()
    const started = Date.now()
    const res = await fetch(`http://127.0.0.1:${port}/v1/audit/events/export?actorAgencyId=${agency.id}`, {
      headers: { authorization: `Bearer ${s.platformAuditor.tokens.accessToken}` }
    })
    t.equal(res.status, 200)
    let bytes = 0
    let lines = 0
    let nextSample = 0
    let liveHeap = 0
    let rss = 0
    const reader = res.body?.getReader()
    for (;;) {
      const chunk = await reader?.read()
      if (chunk === undefined || chunk.done) break
      bytes += chunk.value.byteLength
      for (let at = chunk.value.indexOf(10); at !== -1; at = chunk.value.indexOf(10, at + 1)) lines++
      if (bytes >= nextSample) {
        // Live memory (after a collection), while the export is under way: what it holds on to.
        gc()
        const usage = process.memoryUsage()
        liveHeap = Math.max(liveHeap, usage.heapUsed - baseline.heapUsed)
        rss = Math.max(rss, usage.rss - baseline.rss)
        nextSample += 8 * 1024 * 1024
      }
    }
    const mb = (n: number) => Math.round(n / 1024 / 1024)
    t.equal(lines, 100_000, 'every event, one line each')
    t.ok(bytes > 40 * 1024 * 1024, `${mb(bytes)} MB streamed in ${Date.now() - started} ms`)
    t.ok(liveHeap < 24 * 1024 * 1024, `live heap grew at most ${mb(liveHeap)} MB while ${mb(bytes)} MB went out`)
    t.ok(rss < 160 * 1024 * 1024, `resident memory grew at most ${mb(rss)} MB`)
  })
})
