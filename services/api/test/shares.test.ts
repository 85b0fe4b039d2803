import { auditEvents, outbox, shares } from '@haven/schema'
import { and, eq } from 'drizzle-orm'
import t from 'tap'
import { buildHarness, type Harness, makeAgency, referralBodies, signedIn } from './helper.ts'

type SignedIn = Awaited<ReturnType<typeof signedIn>>

async function scene (h: Harness) {
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const newReferral = async (body: object = referralBodies.consent()) =>
    (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: body as Record<string, unknown> })).json<{ id: string }>()
  const share = async (referralId: string, payload: Record<string, unknown> = { agencyId: ngo.id }) =>
    await referrer.request({ method: 'POST', url: `/v1/referrals/${referralId}/shares`, payload })
  const act = async (caller: SignedIn, referralId: string, shareId: string, action: string, payload: Record<string, unknown> = {}) =>
    await caller.request({ method: 'POST', url: `/v1/referrals/${referralId}/shares/${shareId}/${action}`, payload })
  return { police, ngo, referrer, caseworker, newReferral, share, act }
}

t.test('POST /v1/referrals/:id/shares', async (t) => {
  const h = await buildHarness(t)
  const s = await scene(h)

  t.test('creates a pending share with a deadline from the urgency, announces it, audits the disclosure', async (t) => {
    const referral = await s.newReferral()
    const before = Date.now()
    const res = await s.share(referral.id, { agencyId: s.ngo.id, scopes: ['identity', 'contact'], message: 'Needs a bed tonight' })
    t.equal(res.statusCode, 201)
    const share = res.json()
    t.same(Object.keys(share).sort(), ['agencyId', 'createdAt', 'decidedAt', 'decidedBy', 'declineReason', 'id', 'message', 'outcome', 'referralId', 'respondBy', 'scopes', 'status'])
    t.equal(share.status, 'pending')
    t.same(share.scopes, ['identity', 'contact'])
    const hours = (Date.parse(share.respondBy) - before) / 3600_000
    t.ok(hours > 23.9 && hours < 24.1, 'high urgency: 24 hours')
    const [message] = await h.database.db.select().from(outbox).where(and(eq(outbox.type, 'share.created')))
      .then((rows) => rows.filter((row) => row.payload.shareId === share.id))
    t.same(message?.payload, { referralId: referral.id, shareId: share.id, agencyId: s.ngo.id })
    const [event] = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'share.create'), eq(auditEvents.targetId, share.id)))
    t.equal(event?.recipientAgencyId, s.ngo.id, 'the disclosure names its recipient')
  })

  t.test('deadlines: immediate 4 h, standard 72 h, or respondWithinHours', async (t) => {
    const hoursOf = async (body: object, extra: Record<string, unknown> = {}) => {
      const referral = await s.newReferral(body)
      const share = (await s.share(referral.id, { agencyId: s.ngo.id, ...extra })).json()
      return Math.round((Date.parse(share.respondBy) - Date.parse(share.createdAt)) / 3600_000)
    }
    t.equal(await hoursOf(referralBodies.child()), 4)
    t.equal(await hoursOf(referralBodies.anonymous()), 72)
    t.equal(await hoursOf(referralBodies.anonymous(), { respondWithinHours: 10 }), 10)
  })

  t.test('refusals: 422 for the recipient, 409 for a duplicate or a closed referral, 400 for bad input', async (t) => {
    const referral = await s.newReferral()
    const suspended = await makeAgency(h)
    const admin = await signedIn(h, ['platform_admin'])
    t.equal((await admin.request({ method: 'PATCH', url: `/v1/agencies/${suspended.id}`, payload: { status: 'suspended' } })).statusCode, 200)
    const closedDoor = await makeAgency(h, { acceptsReferrals: false })
    for (const [name, agencyId] of [['own agency', s.police.id], ['suspended agency', suspended.id], ['not accepting referrals', closedDoor.id], ['unknown agency', '00000000-0000-4000-8000-000000000000']] as const) {
      const res = await s.share(referral.id, { agencyId })
      t.equal(res.statusCode, 422, name)
      t.same(res.json().errors.map((e: { path: string }) => e.path), ['/body/agencyId'], name)
    }
    const allowed = await makeAgency(h)
    const notAllowed = await makeAgency(h)
    const narrow = await s.newReferral(referralBodies.consent([allowed.id]))
    t.equal((await s.share(narrow.id, { agencyId: notAllowed.id })).statusCode, 422, 'outside the consent')
    t.equal((await s.share(narrow.id, { agencyId: allowed.id })).statusCode, 201, 'inside the consent')

    t.equal((await s.share(referral.id)).statusCode, 201)
    const [first, second] = await Promise.all([s.share(referral.id), s.share(referral.id)])
    t.same([first?.statusCode, second?.statusCode], [409, 409], 'one active share per agency, even when asked twice at once')
    const count = await h.database.db.select().from(shares).where(and(eq(shares.referralId, referral.id), eq(shares.agencyId, s.ngo.id)))
    t.equal(count.length, 1)

    t.equal((await s.share(referral.id, { agencyId: s.ngo.id, scopes: ['everything'] })).statusCode, 400)
    t.equal((await s.share(referral.id, { agencyId: s.ngo.id, respondWithinHours: 0 })).statusCode, 400)
    t.equal((await s.share(referral.id, { agencyId: 'nope' })).statusCode, 400)

    const closing = await s.newReferral()
    t.equal((await s.referrer.request({ method: 'POST', url: `/v1/referrals/${closing.id}/close` })).statusCode, 200)
    t.equal((await s.share(closing.id)).statusCode, 409, 'a closed referral is not shared')
  })
})

t.test('answering a share', async (t) => {
  const h = await buildHarness(t)
  const s = await scene(h)

  t.test('accept, then close with an outcome; a second accept is 409', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    const accepted = await s.act(s.caseworker, referral.id, share.id, 'accept')
    t.equal(accepted.statusCode, 200)
    t.equal(accepted.json().status, 'accepted')
    t.equal(accepted.json().decidedBy, s.caseworker.user.id)
    t.ok(accepted.json().decidedAt)
    t.equal((await s.act(s.caseworker, referral.id, share.id, 'accept')).statusCode, 409)
    t.equal((await s.act(s.caseworker, referral.id, share.id, 'close', {})).statusCode, 400, 'close needs an outcome')
    const closed = await s.act(s.caseworker, referral.id, share.id, 'close', { outcome: 'supported', note: 'Placed in a safe house.' })
    t.equal(closed.statusCode, 200)
    t.equal(closed.json().outcome, 'supported')
    const view = await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })
    t.equal(view.statusCode, 200, 'a closed share still reads, read-only')
    t.equal((await s.caseworker.request({ method: 'POST', url: `/v1/referrals/${referral.id}/notes`, payload: { body: 'more', visibility: 'shared' } })).statusCode, 403)
    const types = (await h.database.db.select().from(outbox)).filter((m) => m.payload.shareId === share.id).map((m) => m.type)
    t.same(types, ['share.created', 'share.accepted', 'share.closed'])
  })

  t.test('decline needs a reason and ends access', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    t.equal((await s.act(s.caseworker, referral.id, share.id, 'decline', {})).statusCode, 400)
    const declined = await s.act(s.caseworker, referral.id, share.id, 'decline', { reason: 'No capacity this week' })
    t.equal(declined.statusCode, 200)
    t.equal(declined.json().declineReason, 'No capacity this week')
    t.equal((await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })).statusCode, 404)
    t.equal((await s.share(referral.id)).statusCode, 201, 'the agency can be asked again')
  })

  t.test('who may answer: the recipient\'s caseworkers; the origin withdraws', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    const ngoReferrer = await signedIn(h, ['referrer'], s.ngo.id)
    t.equal((await s.act(ngoReferrer, referral.id, share.id, 'accept')).statusCode, 403, 'a referrer of the recipient')
    t.equal((await s.act(s.referrer, referral.id, share.id, 'accept')).statusCode, 403, 'the origin')
    t.equal((await s.act(s.caseworker, referral.id, share.id, 'withdraw')).statusCode, 403, 'the recipient cannot withdraw')
    const stranger = await signedIn(h, ['caseworker'])
    t.equal((await s.act(stranger, referral.id, share.id, 'accept')).statusCode, 404, 'another agency does not see it')
    t.equal((await s.act(s.caseworker, referral.id, '00000000-0000-4000-8000-000000000000', 'accept')).statusCode, 404)
    const withdrawn = await s.act(s.referrer, referral.id, share.id, 'withdraw', { reason: 'Found a closer service' })
    t.equal(withdrawn.statusCode, 200)
    t.equal(withdrawn.json().status, 'withdrawn')
    t.equal((await s.act(s.caseworker, referral.id, share.id, 'accept')).statusCode, 409, 'a withdrawn share cannot be accepted')
    t.equal((await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })).statusCode, 404, 'and the referral is no longer visible')
  })

  t.test('a pending share past its deadline cannot be answered', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    await h.database.db.update(shares).set({ respondBy: new Date(Date.now() - 1000) }).where(eq(shares.id, share.id))
    const late = await s.act(s.caseworker, referral.id, share.id, 'accept')
    t.equal(late.statusCode, 409)
    t.match(late.json().detail, /deadline/)
  })

  t.test('20 concurrent answers to one pending share: exactly one leaves pending', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    const calls = Array.from({ length: 20 }, async (_, i) => i % 2 === 0
      ? await s.act(s.caseworker, referral.id, share.id, 'accept')
      : await s.act(s.caseworker, referral.id, share.id, 'decline', { reason: 'Full' }))
    const statuses = (await Promise.all(calls)).map((r) => r.statusCode)
    t.equal(statuses.filter((c) => c === 200).length, 1, 'one 200')
    t.equal(statuses.filter((c) => c === 409).length, 19, 'the rest 409')
    const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.targetId, share.id), eq(auditEvents.outcome, 'success')))
    t.equal(events.filter((e) => e.action === 'share.accept' || e.action === 'share.decline').length, 1, 'one transition recorded')
  })

  t.test('accept, decline and withdraw racing: one leaves pending; a withdraw may still follow an accept', async (t) => {
    const referral = await s.newReferral()
    const share = (await s.share(referral.id)).json()
    const calls = Array.from({ length: 20 }, async (_, i) => {
      const action = ['accept', 'decline', 'withdraw'][i % 3] ?? 'accept'
      const caller = action === 'withdraw' ? s.referrer : s.caseworker
      return { action, status: (await s.act(caller, referral.id, share.id, action, action === 'decline' ? { reason: 'Full' } : {})).statusCode }
    })
    const results = await Promise.all(calls)
    const wins = results.filter((r) => r.status === 200)
    t.ok(results.every((r) => r.status === 200 || r.status === 409), 'only 200 or 409')
    const firstOut = wins.filter((w) => w.action !== 'withdraw' || !wins.some((x) => x.action === 'accept'))
    t.equal(firstOut.length, 1, 'exactly one transition out of pending')
    t.ok(wins.length === 1 || (wins.length === 2 && wins.some((w) => w.action === 'accept') && wins.some((w) => w.action === 'withdraw')),
      `a second success is only a withdraw after the accept (accepted → withdrawn is legal): ${JSON.stringify(wins)}`)
    const [row] = await h.database.db.select().from(shares).where(eq(shares.id, share.id))
    const expected = wins.length === 2 ? 'withdrawn' : { accept: 'accepted', decline: 'declined', withdraw: 'withdrawn' }[wins[0]?.action ?? 'accept']
    t.equal(row?.status, expected)
  })
})

t.test('notes and the timeline', async (t) => {
  const h = await buildHarness(t)
  const s = await scene(h)
  const other = await makeAgency(h)
  const otherCaseworker = await signedIn(h, ['caseworker'], other.id)
  const referral = await s.newReferral()
  const shareA = (await s.share(referral.id)).json()
  const shareB = (await s.share(referral.id, { agencyId: other.id })).json()
  const note = async (caller: SignedIn, body: string, visibility: string) =>
    await caller.request({ method: 'POST', url: `/v1/referrals/${referral.id}/notes`, payload: { body, visibility } })

  t.equal((await note(s.caseworker, 'too early', 'shared')).statusCode, 403, 'a pending recipient writes no notes')
  t.equal((await s.act(s.caseworker, referral.id, shareA.id, 'accept')).statusCode, 200)
  const originAgencyNote = await note(s.referrer, 'Origin-only note', 'agency')
  t.equal(originAgencyNote.statusCode, 201)
  t.same(Object.keys(originAgencyNote.json()).sort(), ['agencyId', 'authorId', 'body', 'createdAt', 'id', 'referralId', 'visibility'])
  t.equal((await note(s.referrer, 'Shared by origin', 'shared')).statusCode, 201)
  t.equal((await note(s.caseworker, 'Recipient-only note', 'agency')).statusCode, 201)
  t.equal((await note(s.caseworker, 'Shared by recipient', 'shared')).statusCode, 201)
  t.equal((await note(s.caseworker, 'x', 'public')).statusCode, 400)
  t.equal((await note(s.caseworker, '', 'shared')).statusCode, 400)

  const timeline = async (caller: SignedIn) => await caller.request({ method: 'GET', url: `/v1/referrals/${referral.id}/timeline` })
  const notesIn = (res: Awaited<ReturnType<typeof timeline>>) =>
    res.json().items.filter((i: { type: string }) => i.type === 'note.created').map((i: { note: { body: string } }) => i.note.body).sort()

  const origin = await timeline(s.referrer)
  t.equal(origin.statusCode, 200)
  t.equal(origin.headers['cache-control'], 'no-store')
  t.same(notesIn(origin), ['Origin-only note', 'Shared by origin', 'Shared by recipient'])
  const originTypes = origin.json().items.map((i: { type: string }) => i.type)
  t.same(originTypes.filter((type: string) => type !== 'note.created'), ['referral.created', 'share.created', 'share.created', 'share.accepted'])

  const recipient = await timeline(s.caseworker)
  t.same(shareA.scopes, [], 'a share granting no field group')
  t.same(notesIn(recipient), ['Recipient-only note', 'Shared by origin', 'Shared by recipient'], 'still shows shared notes: they follow access, not scopes')
  t.ok(recipient.json().items.every((i: { type: string, shareId?: string }) => i.type === 'note.created' || i.shareId === shareA.id), 'only its own share\'s events')

  const pending = await timeline(otherCaseworker)
  t.equal(pending.statusCode, 200)
  t.same(notesIn(pending), [], 'a triage card shows no notes')
  t.ok(pending.json().items.every((i: { shareId?: string }) => i.shareId === shareB.id))

  const stranger = await signedIn(h, ['caseworker'])
  t.equal((await timeline(stranger)).statusCode, 404)
  const admin = await signedIn(h, ['agency_admin'], s.police.id)
  t.equal((await timeline(admin)).statusCode, 403)
  const trail = JSON.stringify(await h.database.db.select().from(auditEvents).where(eq(auditEvents.referralId, referral.id)))
  t.notOk(['Origin-only', 'Shared by', 'Recipient-only'].some((body) => trail.includes(body)), 'note bodies never reach the audit trail')
})

t.test('a closed share\'s read-only view ends when consent no longer covers its agency', async (t) => {
  const h = await buildHarness(t)
  const s = await scene(h)
  const other = await makeAgency(h)
  const referral = await s.newReferral(referralBodies.consent([s.ngo.id]))
  const share = (await s.share(referral.id)).json()
  t.equal((await s.act(s.caseworker, referral.id, share.id, 'accept')).statusCode, 200)
  t.equal((await s.act(s.caseworker, referral.id, share.id, 'close', { outcome: 'supported' })).statusCode, 200)
  t.equal((await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })).statusCode, 200, 'read-only while consent covers it')
  const patched = await s.referrer.request({ method: 'PATCH', url: `/v1/referrals/${referral.id}`, headers: { 'if-match': '"1"' },
    payload: { consent: { sharingAllowedWith: [other.id] }, subject: { contact: { address: '2 Canary Safe House' } } } })
  t.equal(patched.statusCode, 200, 'a closed share does not block narrowing consent')
  t.equal((await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}` })).statusCode, 404, 'the closed recipient no longer sees it')
  t.equal((await s.caseworker.request({ method: 'GET', url: `/v1/referrals/${referral.id}/timeline` })).statusCode, 404)
  const listed = (await s.caseworker.request({ method: 'GET', url: '/v1/referrals?direction=incoming' })).json().items.map((i: { id: string }) => i.id)
  t.notOk(listed.includes(referral.id), 'nor in its list')
})
