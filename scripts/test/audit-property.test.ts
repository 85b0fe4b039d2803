/**
 * Property: whatever sequence of operations people perform on referrals, each request leaves
 * exactly the audit events it should (UK DPA 2018 s.62: collection, alteration, consultation,
 * disclosure with its recipient, and refusals), and no audit row and no log line carries the
 * personal data that went in. There is no erasure operation yet, so erasure is not covered: add it
 * to the model when it exists.
 *
 * fast-check generates sequences of create, read, list, update, share, accept, decline, close
 * (referral and share), note and timeline calls by people of four agencies and an auditor; a small
 * model of referrals and shares says what each call must answer and record. Events are matched to
 * the request that wrote them by request id.
 */
import { Writable } from 'node:stream'
import fc from 'fast-check'
import t from 'tap'
import { buildHarness, makeAgency, referralBodies, signedIn } from '../../services/api/test/helper.ts'

const logLines: string[] = []
const logStream = new Writable({ write (chunk: Buffer, _encoding, done) { logLines.push(chunk.toString()); done() } })
const h = await buildHarness(t, { env: { LOG_LEVEL: 'trace' }, logStream })

const origin = await makeAgency(h, { kind: 'police' })
const ngoB = await makeAgency(h)
const ngoC = await makeAgency(h)
const outsider = await makeAgency(h)
const agencyIds = [origin.id, ngoB.id, ngoC.id, outsider.id]
const people = {
  referrer: { agency: origin.id, content: true, caller: await signedIn(h, ['referrer'], origin.id) },
  caseworkerB: { agency: ngoB.id, content: true, caller: await signedIn(h, ['caseworker'], ngoB.id) },
  caseworkerC: { agency: ngoC.id, content: true, caller: await signedIn(h, ['caseworker'], ngoC.id) },
  outsider: { agency: outsider.id, content: true, caller: await signedIn(h, ['caseworker'], outsider.id) },
  auditor: { agency: origin.id, content: false, caller: await signedIn(h, ['auditor'], origin.id) }
}
type Person = keyof typeof people
const recipients = { ngoB: ngoB.id, ngoC: ngoC.id, outsider: outsider.id }
type Recipient = keyof typeof recipients
const caseworkerOf: Record<Recipient, Person> = { ngoB: 'caseworkerB', ngoC: 'caseworkerC', outsider: 'outsider' }

/** Personal data in the inputs: every value carries a marker to search for. */
const canaries = ['canary', 'testperson', 'youngperson', '7700 900000']

type ShareStatus = 'pending' | 'accepted' | 'declined' | 'withdrawn' | 'closed'
interface ModelShare { id: string, agencyId: string, status: ShareStatus }
interface ModelReferral { id: string, status: 'open' | 'closed', shares: ModelShare[] }
/** [action, outcome, referralId, targetType, recipientAgencyId] */
type Expected = [string, string, string | null, string | null, string | null]

type View = 'origin' | 'triage' | 'scoped' | 'none'
function viewOf (person: Person, referral: ModelReferral): View {
  const agency = people[person].agency
  if (agency === origin.id) return 'origin'
  const own = referral.shares.filter((s) => s.agencyId === agency)
  if (own.some((s) => s.status === 'accepted')) return 'scoped'
  if (own.some((s) => s.status === 'pending')) return 'triage'
  if (own.some((s) => s.status === 'closed')) return 'scoped'
  return 'none'
}

const person = fc.constantFrom<Person>('referrer', 'caseworkerB', 'caseworkerC', 'outsider', 'auditor')
const recipient = fc.constantFrom<Recipient>('ngoB', 'ngoC', 'outsider')
const ref = fc.nat({ max: 4 })
const operation = fc.oneof(
  fc.record({ kind: fc.constant('create' as const), body: fc.constantFrom<'consent' | 'child' | 'anonymous'>('consent', 'child', 'anonymous') }),
  fc.record({ kind: fc.constant('read' as const), who: person, ref }),
  fc.record({ kind: fc.constant('list' as const), who: person }),
  fc.record({ kind: fc.constant('update' as const), who: person, ref }),
  fc.record({ kind: fc.constant('share' as const), to: recipient, ref }),
  fc.record({ kind: fc.constantFrom('accept' as const, 'decline' as const, 'closeShare' as const), by: recipient, ref }),
  fc.record({ kind: fc.constant('close' as const), ref }),
  fc.record({ kind: fc.constant('note' as const), who: person, ref }),
  fc.record({ kind: fc.constant('timeline' as const), who: person, ref })
)
type Operation = typeof operation extends fc.Arbitrary<infer O> ? O : never

const sortEvents = (events: Expected[]) => [...events].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))

async function recorded (requestId: string): Promise<Expected[]> {
  const rows = await h.database.rows<{ action: string, outcome: string, referral_id: string | null, target_type: string | null, recipient_agency_id: string | null }>(
    (await import('@haven/schema')).sql`select action::text, outcome::text, referral_id::text, target_type::text, recipient_agency_id::text from audit_events where request_id = ${requestId}`)
  return rows.map((r) => [r.action, r.outcome, r.referral_id, r.target_type, r.recipient_agency_id])
}

let requests = 0

/** Performs one operation, checks its status and its audit events against the model, and updates the model. */
async function perform (op: Operation, referrals: ModelReferral[]) {
  const requestId = `prop-${Date.now()}-${requests++}`
  const send = async (who: Person, method: 'GET' | 'POST' | 'PATCH', url: string, payload?: Record<string, unknown>, headers: Record<string, string> = {}) =>
    await people[who].caller.request({ method, url, headers: { 'x-request-id': requestId, ...headers }, ...(payload !== undefined ? { payload } : {}) })
  const check = async (res: { statusCode: number, body: string }, status: number, events: Expected[]) => {
    const got = await recorded(requestId)
    if (res.statusCode !== status || JSON.stringify(sortEvents(got)) !== JSON.stringify(sortEvents(events))) {
      throw new Error(`${JSON.stringify(op)}: expected ${status} ${JSON.stringify(events)}, got ${res.statusCode} ${JSON.stringify(got)} ${res.statusCode >= 400 ? res.body : ''}`)
    }
  }
  if (op.kind === 'create') {
    const res = await send('referrer', 'POST', '/v1/referrals', referralBodies[op.body]() as Record<string, unknown>)
    const id = res.json<{ id: string }>().id
    await check(res, 201, [['referral.create', 'success', id, 'referral', null]])
    referrals.push({ id, status: 'open', shares: [] })
    return
  }
  if (op.kind === 'list') {
    const res = await send(op.who, 'GET', '/v1/referrals?limit=200')
    if (!people[op.who].content) return await check(res, 403, [['referral.list', 'denied', null, null, null]])
    const items = res.json<{ items: { id: string }[] }>().items
    return await check(res, 200, items.length === 0 ? [['referral.list', 'success', null, null, null]] : items.map((i) => ['referral.list', 'success', i.id, 'referral', null]))
  }
  const referral = referrals[op.ref % referrals.length]
  if (referral === undefined) return
  const base = `/v1/referrals/${referral.id}`
  /** The refusals every referral route shares: no content role 403, not visible 404. */
  const refused = async (who: Person, action: string, res: { statusCode: number, body: string }) => {
    if (!people[who].content) { await check(res, 403, [[action, 'denied', referral.id, 'referral', null]]); return true }
    if (viewOf(who, referral) === 'none') { await check(res, 404, [[action, 'denied', referral.id, 'referral', null]]); return true }
    return false
  }
  switch (op.kind) {
    case 'read':
    case 'timeline': {
      const action = op.kind === 'read' ? 'referral.read' : 'timeline.read'
      const res = await send(op.who, 'GET', op.kind === 'read' ? base : `${base}/timeline`)
      if (await refused(op.who, action, res)) return
      return await check(res, 200, [[action, 'success', referral.id, 'referral', null]])
    }
    case 'update': {
      const res = await send(op.who, 'PATCH', base, { urgency: 'standard', exploitation: { narrative: 'Canary narrative, revised.' } }, { 'if-match': '*' })
      if (await refused(op.who, 'referral.update', res)) return
      if (viewOf(op.who, referral) !== 'origin') return await check(res, 403, [['referral.update', 'denied', referral.id, 'referral', null]])
      if (referral.status === 'closed') return await check(res, 409, [])
      return await check(res, 200, [['referral.update', 'success', referral.id, 'referral', null]])
    }
    case 'note': {
      const res = await send(op.who, 'POST', `${base}/notes`, { body: 'Canary note: met at 1 Canary Street.', visibility: 'shared' })
      if (await refused(op.who, 'note.create', res)) return
      const view = viewOf(op.who, referral)
      const accepted = referral.shares.some((s) => s.agencyId === people[op.who].agency && s.status === 'accepted')
      if (view !== 'origin' && !accepted) return await check(res, 403, [['note.create', 'denied', referral.id, 'referral', null]])
      return await check(res, 201, [['note.create', 'success', referral.id, 'note', null]])
    }
    case 'share': {
      const agencyId = recipients[op.to]
      const res = await send('referrer', 'POST', `${base}/shares`, { agencyId, scopes: ['identity'], message: 'Canary message' })
      const active = referral.shares.some((s) => s.agencyId === agencyId && (s.status === 'pending' || s.status === 'accepted'))
      if (referral.status === 'closed' || active) return await check(res, 409, [])
      await check(res, 201, [['share.create', 'success', referral.id, 'share', agencyId]])
      referral.shares.push({ id: res.json<{ id: string }>().id, agencyId, status: 'pending' })
      return
    }
    case 'accept':
    case 'decline':
    case 'closeShare': {
      const agencyId = recipients[op.by]
      const share = referral.shares.filter((s) => s.agencyId === agencyId).at(-1)
      if (share === undefined) return
      const path = op.kind === 'accept' ? 'accept' : op.kind === 'decline' ? 'decline' : 'close'
      const body = op.kind === 'decline' ? { reason: 'Canary reason' } : op.kind === 'closeShare' ? { outcome: 'supported', note: 'Canary outcome' } : {}
      const res = await send(caseworkerOf[op.by], 'POST', `${base}/shares/${share.id}/${path}`, body)
      const from = op.kind === 'closeShare' ? 'accepted' : 'pending'
      if (share.status !== from) return await check(res, 409, [])
      const action = op.kind === 'accept' ? 'share.accept' : op.kind === 'decline' ? 'share.decline' : 'share.close'
      // A share closed with an outcome note also records the note it wrote.
      await check(res, 200, [[action, 'success', referral.id, 'share', agencyId],
        ...(op.kind === 'closeShare' ? [['note.create', 'success', referral.id, 'note', null] as Expected] : [])])
      share.status = op.kind === 'accept' ? 'accepted' : op.kind === 'decline' ? 'declined' : 'closed'
      return
    }
    case 'close': {
      const res = await send('referrer', 'POST', `${base}/close`, { outcome: 'referred_on', note: 'Canary closing note' })
      if (referral.status === 'closed') return await check(res, 409, [])
      const open = referral.shares.filter((s) => s.status === 'pending' || s.status === 'accepted')
      await check(res, 200, [
        ...open.map((s): Expected => ['share.withdraw', 'success', referral.id, 'share', s.agencyId]),
        ['note.create', 'success', referral.id, 'note', null],
        ['referral.close', 'success', referral.id, 'referral', null]
      ])
      referral.status = 'closed'
      for (const s of open) s.status = 'withdrawn'
    }
  }
}

t.test('every operation records exactly its audit events', async (t) => {
  await fc.assert(fc.asyncProperty(fc.array(operation, { minLength: 1, maxLength: 16 }), async (operations) => {
    const referrals: ModelReferral[] = []
    await perform({ kind: 'create', body: 'consent' }, referrals)
    for (const op of operations) await perform(op, referrals)
  }), { numRuns: 50 })
  t.ok(requests > 25, `${requests} requests checked`)
})

t.test('no audit row and no log line carries the personal data that went in', async (t) => {
  const rows = await h.database.rows<{ row: string }>((await import('@haven/schema')).sql`
    select row_to_json(e)::text as row from audit_events e
    where e.actor_agency_id = any(${`{${agencyIds.join(',')}}`}::uuid[]) or e.recipient_agency_id = any(${`{${agencyIds.join(',')}}`}::uuid[])`)
  t.ok(rows.length > 100, `${rows.length} audit rows searched`)
  const leakingRows = rows.filter((r) => canaries.some((c) => r.row.toLowerCase().includes(c)))
  t.same(leakingRows, [], 'no personal data in the audit trail')
  t.ok(logLines.length > 100, `${logLines.length} log lines searched`)
  const leakingLines = logLines.filter((line) => canaries.some((c) => line.toLowerCase().includes(c)))
  t.same(leakingLines, [], 'no personal data in the logs')
})
