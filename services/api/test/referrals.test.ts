import { auditEvents, idempotencyKeys, outbox, referrals } from '@haven/schema'
import { and, eq, inArray } from 'drizzle-orm'
import t from 'tap'
import { buildHarness, makeAgency, referralBodies, signedIn } from './helper.ts'

type Body = Record<string, unknown>
const clone = <T>(value: T): T => structuredClone(value)

t.test('POST /v1/referrals', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const create = async (payload: unknown, headers: Record<string, string> = {}) =>
    await referrer.request({ method: 'POST', url: '/v1/referrals', payload: payload as Body, headers })
  const countReferrals = async () => (await h.database.db.select({ id: referrals.id }).from(referrals).where(eq(referrals.originAgencyId, police.id))).length

  t.test('creates a referral with a reference, full view, ETag and no-store', async (t) => {
    const res = await create(referralBodies.consent())
    t.equal(res.statusCode, 201)
    const body = res.json()
    t.match(body.reference, /^HVN-\d{4}-\d{6}$/)
    t.equal(body.reference.slice(4, 8), String(new Date().getUTCFullYear()))
    t.equal(body.status, 'open')
    t.equal(body.originAgencyId, police.id)
    t.equal(body.createdBy, referrer.user.id)
    t.equal(body.version, 1)
    t.same(body.shares, [])
    t.equal(body.subject.givenName, 'Canary')
    t.equal(body.subject.contact.phone, '+44 7700 900000 Canary')
    t.equal(body.exploitation.narrative, 'Canary narrative of what was seen.')
    t.equal(res.headers.etag, '"1"')
    t.equal(res.headers['cache-control'], 'no-store')
    const [event] = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.referralId, body.id), eq(auditEvents.action, 'referral.create')))
    t.equal(event?.outcome, 'success')
    t.equal(event?.actorUserId, referrer.user.id)
  })

  t.test('references are unique under concurrent creates', async (t) => {
    const results = await Promise.all(Array.from({ length: 20 }, async () => await create(referralBodies.child())))
    t.same(results.map((r) => r.statusCode), Array(20).fill(201))
    t.equal(new Set(results.map((r) => r.json().reference)).size, 20)
  })

  t.test('Idempotency-Key: a repeat returns the first referral; another body is 422', async (t) => {
    const key = `key-${Date.now()}`
    const [first, second] = await Promise.all([create(referralBodies.anonymous(), { 'idempotency-key': key }), create(referralBodies.anonymous(), { 'idempotency-key': key })])
    t.equal(first?.statusCode, 201)
    t.equal(second?.statusCode, 201)
    t.equal(first?.json().id, second?.json().id, 'the same referral, even for two requests at once')
    const again = await create(referralBodies.anonymous(), { 'idempotency-key': key })
    t.equal(again.statusCode, 201)
    t.equal(again.json().id, first?.json().id)
    const before = await countReferrals()
    const other = await create(referralBodies.child(), { 'idempotency-key': key })
    t.equal(other.statusCode, 422)
    t.equal(await countReferrals(), before, 'nothing created')
    const keys = await h.database.db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key))
    t.equal(keys.length, 1)
    const someoneElse = await signedIn(h, ['referrer'], police.id)
    const theirs = await someoneElse.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.anonymous(), headers: { 'idempotency-key': key } })
    t.not(theirs.json().id, first?.json().id, 'keys belong to one user')
    t.equal((await create(referralBodies.anonymous(), { 'idempotency-key': 'has space' })).statusCode, 400)
  })

  t.test('legal basis rules: each violation is a 422 that names the field and writes nothing', async (t) => {
    const cases: [string, Body, string][] = []
    const childWithConsent = clone(referralBodies.consent()); childWithConsent.subject.ageGroup = 'child'
    cases.push(['consent for a child', childWithConsent, '/body/consent/basis'])
    const unknownWithConsent = clone(referralBodies.consent()); unknownWithConsent.subject.ageGroup = 'unknown'
    cases.push(['consent for an unknown age', unknownWithConsent, '/body/consent/basis'])
    const adultSafeguarding = clone(referralBodies.child()); adultSafeguarding.subject.ageGroup = 'adult'
    cases.push(['child safeguarding for an adult', adultSafeguarding, '/body/consent/basis'])
    const childNotify = clone(referralBodies.anonymous()); childNotify.subject.ageGroup = 'child'
    cases.push(['duty to notify for a child', childNotify, '/body/consent/basis'])
    const noSharing = clone(referralBodies.consent()) as Body & { consent: Body }; delete noSharing.consent.sharingAllowedWith
    cases.push(['consent without sharingAllowedWith', noSharing, '/body/consent/sharingAllowedWith'])
    const noMethod = clone(referralBodies.consent()) as Body & { consent: Body }; delete noMethod.consent.method
    cases.push(['consent without method', noMethod, '/body/consent/method'])
    const named = clone(referralBodies.anonymous()) as Body & { subject: Body }; named.subject.givenName = 'Canary'
    cases.push(['duty to notify with a name', named, '/body/subject/givenName'])
    const reachable = clone(referralBodies.anonymous()) as Body & { subject: Body }; reachable.subject.contact = { phone: '0 Canary' }
    cases.push(['duty to notify with contact', reachable, '/body/subject/contact'])
    const sharingOnChild = clone(referralBodies.child()) as Body & { consent: Body }; sharingOnChild.consent.sharingAllowedWith = 'any'
    cases.push(['sharingAllowedWith on a safeguarding referral', sharingOnChild, '/body/consent/sharingAllowedWith'])
    cases.push(['sharingAllowedWith naming an unknown agency', referralBodies.consent(['00000000-0000-4000-8000-000000000000']), '/body/consent/sharingAllowedWith'])
    for (const [name, payload, path] of cases) {
      const before = await countReferrals()
      const res = await create(payload)
      t.equal(res.statusCode, 422, name)
      t.ok(res.json().errors.some((e: { path: string }) => e.path === path), `${name}: names ${path}`)
      t.ok(res.json().detail.length > 20, `${name}: explains itself`)
      t.equal(await countReferrals(), before, `${name}: nothing written`)
    }
  })

  t.test('schema violations are 400 with their paths', async (t) => {
    const long = clone(referralBodies.child()); long.exploitation.narrative = 'x'.repeat(20_001)
    const indicator = clone(referralBodies.anonymous()); indicator.exploitation.indicators = ['looked_suspicious']
    const date = clone(referralBodies.consent()); date.subject.dateOfBirth = '1990-02-31x'
    const type = clone(referralBodies.child()) as Body & { exploitation: Body }; type.exploitation.types = ['piracy']
    const extra = { ...referralBodies.child(), colour: 'blue' }
    const when = clone(referralBodies.consent()); when.consent.recordedAt = 'yesterday'
    for (const [payload, path] of [
      [long, '/body/exploitation/narrative'], [indicator, '/body/exploitation/indicators/0'], [date, '/body/subject/dateOfBirth'],
      [type, '/body/exploitation/types/0'], [extra, '/body/colour'], [when, '/body/consent/recordedAt'], [{}, '/body/subject']
    ] as const) {
      const res = await create(payload)
      t.equal(res.statusCode, 400, path)
      t.ok(res.json().errors.some((e: { path: string }) => e.path === path), `names ${path}`)
    }
    const ok = clone(referralBodies.child()); ok.exploitation.narrative = 'x'.repeat(20_000)
    t.equal((await create(ok)).statusCode, 201, 'exactly 20,000 characters is fine')
  })

  t.test('only referrers create', async (t) => {
    for (const roles of [['caseworker'], ['agency_admin'], ['auditor'], ['platform_admin'], ['platform_auditor']] as const) {
      const caller = await signedIn(h, [...roles], police.id)
      const res = await caller.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })
      t.equal(res.statusCode, 403, roles.join())
      const denied = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.actorUserId, caller.user.id), eq(auditEvents.action, 'referral.create')))
      t.equal(denied[0]?.outcome, 'denied', `${roles.join()}: the refusal is audited`)
    }
    t.equal((await h.app.inject({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).statusCode, 401)
  })
})

t.test('PATCH /v1/referrals/:id', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], police.id)
  const create = async (payload: Body) => (await referrer.request({ method: 'POST', url: '/v1/referrals', payload })).json()
  const patch = async (id: string, payload: unknown, ifMatch?: string, caller = referrer) =>
    await caller.request({ method: 'PATCH', url: `/v1/referrals/${id}`, payload: payload as Body, headers: ifMatch !== undefined ? { 'if-match': ifMatch } : {} })

  t.test('needs If-Match: 428 without, 412 when stale, 200 with the current ETag', async (t) => {
    const referral = await create(referralBodies.child())
    t.equal((await patch(referral.id, { urgency: 'high' })).statusCode, 428)
    const ok = await patch(referral.id, { urgency: 'high' }, '"1"', caseworker)
    t.equal(ok.statusCode, 200, 'a caseworker of the origin agency may edit')
    t.equal(ok.json().urgency, 'high')
    t.equal(ok.json().version, 2)
    t.equal(ok.headers.etag, '"2"')
    t.equal((await patch(referral.id, { urgency: 'standard' }, '"1"')).statusCode, 412, 'stale')
    t.equal((await patch(referral.id, { urgency: 'standard' }, 'garbage')).statusCode, 412)
    const read = await referrer.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })
    t.equal(read.json().urgency, 'high', 'the stale write changed nothing')
    t.equal(read.headers.etag, '"2"')
  })

  t.test('merge patch: fields merge, null removes, arrays replace', async (t) => {
    const referral = await create(referralBodies.consent())
    const res = await patch(referral.id, { subject: { gender: null, aliases: ['Other Canary'] }, exploitation: { types: ['labour', 'criminal'] } }, '"1"')
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.notOk('gender' in body.subject)
    t.same(body.subject.aliases, ['Other Canary'])
    t.equal(body.subject.givenName, 'Canary', 'untouched fields stay')
    t.same(body.exploitation.types, ['labour', 'criminal'])
    t.equal(body.exploitation.narrative, 'Canary narrative of what was seen.')
  })

  t.test('legal basis rules hold on update; an anonymous record can be upgraded to consent with identity', async (t) => {
    const anonymous = await create(referralBodies.anonymous())
    const named = await patch(anonymous.id, { subject: { givenName: 'Canary' } }, '"1"')
    t.equal(named.statusCode, 422, 'a name on a duty-to-notify record')
    const upgraded = await patch(anonymous.id, {
      subject: { givenName: 'Canary', familyName: 'Upgraded' },
      consent: { basis: 'consent', recordedAt: '2026-11-02T09:00:00.000Z', method: 'written', sharingAllowedWith: 'any' }
    }, '"1"')
    t.equal(upgraded.statusCode, 200)
    t.equal(upgraded.json().consent.basis, 'consent')
    t.equal(upgraded.json().subject.familyName, 'Upgraded')
    const child = await patch(anonymous.id, { subject: { ageGroup: 'child' } }, '"2"')
    t.equal(child.statusCode, 422, 'consent for a child')
    const invalid = await patch(anonymous.id, { exploitation: { indicators: ['bogus'] } }, '"2"')
    t.equal(invalid.statusCode, 400)
    t.same(invalid.json().errors.map((e: { path: string }) => e.path), ['/body/exploitation/indicators/0'])
    t.equal((await patch(anonymous.id, {}, '"2"')).statusCode, 400, 'an empty patch')
    t.equal((await patch(anonymous.id, { reference: 'HVN-0000-000000' }, '"2"')).statusCode, 400, 'not an editable field')
  })

  t.test('consent cannot be narrowed below an active share', async (t) => {
    const ngo = await makeAgency(h)
    const other = await makeAgency(h)
    const referral = await create(referralBodies.consent('any'))
    t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).statusCode, 201)
    const narrowed = await patch(referral.id, { consent: { sharingAllowedWith: [other.id] } }, '"1"')
    t.equal(narrowed.statusCode, 422)
    const kept = await patch(referral.id, { consent: { sharingAllowedWith: [ngo.id, other.id] } }, '"1"')
    t.equal(kept.statusCode, 200)
  })

  t.test('a closed referral is not edited; other agencies cannot edit', async (t) => {
    const referral = await create(referralBodies.child())
    t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/close`, payload: {} })).statusCode, 200)
    t.equal((await patch(referral.id, { urgency: 'high' }, '"2"')).statusCode, 409)
    const stranger = await signedIn(h, ['referrer'])
    t.equal((await patch(referral.id, { urgency: 'high' }, '"2"', stranger)).statusCode, 404)
  })
})

t.test('POST /v1/referrals/:id/close withdraws open shares and tells the worker', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const ngoA = await makeAgency(h)
  const ngoB = await makeAgency(h)
  const ngoC = await makeAgency(h)
  const caseworkerB = await signedIn(h, ['caseworker'], ngoB.id)
  const caseworkerC = await signedIn(h, ['caseworker'], ngoC.id)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  const share = async (agencyId: string) => (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId } })).json()
  const pending = await share(ngoA.id)
  const accepted = await share(ngoB.id)
  const declined = await share(ngoC.id)
  t.equal((await caseworkerB.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${accepted.id}/accept` })).statusCode, 200)
  t.equal((await caseworkerC.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${declined.id}/decline`, payload: { reason: 'No beds' } })).statusCode, 200)

  const closed = await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/close`, payload: { outcome: 'supported', note: 'Closing note' } })
  t.equal(closed.statusCode, 200)
  const body = closed.json()
  t.equal(body.status, 'closed')
  t.equal(body.closedOutcome, 'supported')
  const statusOf = (id: string) => body.shares.find((s: { id: string }) => s.id === id)?.status
  t.equal(statusOf(pending.id), 'withdrawn')
  t.equal(statusOf(accepted.id), 'withdrawn')
  t.equal(statusOf(declined.id), 'declined', 'a declined share stays declined')
  t.equal((await caseworkerB.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })).statusCode, 404, 'the recipient lost access')
  t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/close`, payload: {} })).statusCode, 409, 'closing twice')

  const messages = await h.database.db.select().from(outbox).where(inArray(outbox.type, ['share.withdrawn', 'referral.closed']))
  const mine = messages.filter((m) => m.payload.referralId === referral.id)
  t.same(mine.map((m) => m.type).sort(), ['referral.closed', 'share.withdrawn', 'share.withdrawn'])
  t.notOk(JSON.stringify(mine).includes('Canary'), 'outbox payloads hold ids only')
  const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.referralId, referral.id), inArray(auditEvents.action, ['share.withdraw', 'referral.close'])))
  t.equal(events.length, 3)
})

t.test('GET /v1/referrals: summaries, direction, status, stable pagination, audited', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const ids: string[] = []
  for (let i = 0; i < 7; i++) ids.push((await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent() })).json().id)
  const sharedId = ids[0] ?? ''
  t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${sharedId}/shares`, payload: { agencyId: ngo.id, scopes: ['identity'] } })).statusCode, 201)

  const list = async (caller: typeof referrer, query: string) => await caller.request({ method: 'GET', url: `/v1/referrals${query}` })
  const outgoing = await list(referrer, '?direction=outgoing')
  t.equal(outgoing.statusCode, 200)
  t.equal(outgoing.headers['cache-control'], 'no-store')
  t.same(outgoing.json().items.map((i: { id: string }) => i.id), [...ids].reverse(), 'newest first')
  t.notOk(outgoing.body.includes('Canary'), 'no identity, contact or circumstances value in a list')
  for (const item of outgoing.json().items) {
    t.same(Object.keys(item).sort(), ['createdAt', 'exploitation', 'id', 'needs', 'originAgencyId', 'reference', 'status', 'subject', 'urgency'])
    t.same(Object.keys(item.subject).sort(), ['ageGroup', 'gender', 'interpreterNeeded', 'languages'])
    t.same(Object.keys(item.exploitation).sort(), ['area', 'types'])
  }
  const incoming = await list(caseworker, '?direction=incoming')
  t.same(incoming.json().items.map((i: { id: string }) => i.id), [sharedId])
  t.equal(incoming.json().items[0].share.status, 'pending')
  t.same((await list(caseworker, '?direction=outgoing')).json().items, [])
  t.same((await list(caseworker, '')).json().items.map((i: { id: string }) => i.id), [sharedId], 'both directions by default')

  const auditedIds = (await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'referral.list'), eq(auditEvents.actorUserId, caseworker.user.id))))
    .map((e) => e.referralId)
  t.ok(auditedIds.includes(sharedId), 'the list records which referrals it returned')

  t.test('pages are stable while referrals are being created', async (t) => {
    const seen: string[] = []
    let cursor: string | null = null
    do {
      const page = await list(referrer, `?direction=outgoing&limit=3${cursor !== null ? `&cursor=${cursor}` : ''}`)
      t.equal(page.statusCode, 200)
      seen.push(...page.json().items.map((i: { id: string }) => i.id))
      cursor = page.json().nextCursor
      // A new referral between pages lands before the cursor: never repeated, never shifting others.
      await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })
    } while (cursor !== null)
    t.same(seen, [...ids].reverse(), 'every referral once, in order')
    t.equal((await list(referrer, '?cursor=bogus')).statusCode, 400)
  })

  t.test('status filter', async (t) => {
    t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${ids[1]}/close`, payload: {} })).statusCode, 200)
    const closed = await list(referrer, '?direction=outgoing&status=closed')
    t.same(closed.json().items.map((i: { id: string }) => i.id), [ids[1]])
    t.equal((await list(referrer, '?status=archived')).statusCode, 400)
  })
})

t.test('PATCH by a role that may not edit is 403 with or without If-Match, and audited', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const admin = await signedIn(h, ['agency_admin'], police.id)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  t.equal((await admin.request({ method: 'PATCH', url: `/v1/referrals/${referral.id}`, payload: { urgency: 'high' } })).statusCode, 403)
  const stranger = await signedIn(h, ['referrer'])
  t.equal((await stranger.request({ method: 'PATCH', url: `/v1/referrals/${referral.id}`, payload: { urgency: 'high' } })).statusCode, 404)
  const denied = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.referralId, referral.id), eq(auditEvents.action, 'referral.update')))
  t.equal(denied.filter((e) => e.outcome === 'denied').length, 2)
})
