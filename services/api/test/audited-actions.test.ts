/**
 * Operations that used to leave no audit event of their own: reads and retries of an agency's
 * webhooks and deliveries, and notes written through closing or withdrawing. Each request leaves
 * exactly one event of its action, with ids only.
 */
import { type AuditAction, auditEvents, type AuditOutcome, notes, webhookDeliveries, webhooks } from '@haven/schema'
import { eq } from 'drizzle-orm'
import type { LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildHarness, type Harness, makeAgency, referralBodies, signedIn } from './helper.ts'

const eventsOf = async (h: Harness, res: LightMyRequestResponse) =>
  await h.database.db.select().from(auditEvents).where(eq(auditEvents.requestId, String(res.headers['x-request-id'])))

/** Exactly one event of `action` for the request, as expected, holding none of `personal`. */
async function auditedOnce (t: Test, h: Harness, res: LightMyRequestResponse, action: AuditAction, outcome: AuditOutcome,
  target: { type: string, id: string }, personal: string[]) {
  const events = (await eventsOf(h, res)).filter((event) => event.action === action)
  t.equal(events.length, 1, `one ${action} event`)
  t.match(events[0], { outcome, targetType: target.type, targetId: target.id })
  const row = JSON.stringify(events)
  for (const value of personal) t.notOk(row.includes(value), 'no personal data in the event')
}

t.test('webhook reads and retries are audited, refusals included', async (t) => {
  const h = await buildHarness(t)
  const ngo = await makeAgency(h)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const stranger = await signedIn(h, ['agency_admin'])
  const [webhook] = await h.database.db.insert(webhooks).values({
    agencyId: ngo.id, url: 'https://hooks.example.org/haven', events: ['share.created'], secret: 'whsec_test', createdBy: admin.user.id
  }).returning()
  if (webhook === undefined) throw new Error('no webhook')
  const [delivery] = await h.database.db.insert(webhookDeliveries).values({
    webhookId: webhook.id, eventId: '00000000-0000-4000-8000-000000000001', type: 'share.created', status: 'failed', attempts: 9
  }).returning()
  if (delivery === undefined) throw new Error('no delivery')
  const base = `/v1/agencies/${ngo.id}/webhooks`
  const personal = [admin.user.email, admin.user.name, stranger.user.email, webhook.url, webhook.secret]
  const agencyTarget = { type: 'agency', id: ngo.id }
  const webhookTarget = { type: 'webhook', id: webhook.id }
  const deliveryTarget = { type: 'delivery', id: delivery.id }

  t.test('listing the webhooks', async (t) => {
    const res = await admin.request({ method: 'GET', url: base })
    t.equal(res.statusCode, 200)
    await auditedOnce(t, h, res, 'webhook.list', 'success', agencyTarget, personal)
    const refused = await stranger.request({ method: 'GET', url: base })
    t.equal(refused.statusCode, 403)
    await auditedOnce(t, h, refused, 'webhook.list', 'denied', agencyTarget, personal)
  })

  t.test('listing the deliveries', async (t) => {
    const res = await admin.request({ method: 'GET', url: `${base}/${webhook.id}/deliveries?status=failed` })
    t.equal(res.statusCode, 200)
    await auditedOnce(t, h, res, 'delivery.list', 'success', webhookTarget, personal)
    const refused = await stranger.request({ method: 'GET', url: `${base}/${webhook.id}/deliveries` })
    t.equal(refused.statusCode, 403)
    await auditedOnce(t, h, refused, 'delivery.list', 'denied', webhookTarget, personal)
    const unknown = '00000000-0000-4000-8000-00000000abcd'
    const missing = await admin.request({ method: 'GET', url: `${base}/${unknown}/deliveries` })
    t.equal(missing.statusCode, 404)
    await auditedOnce(t, h, missing, 'delivery.list', 'denied', { type: 'webhook', id: unknown }, personal)
  })

  t.test('retrying a delivery', async (t) => {
    const url = `${base}/${webhook.id}/deliveries/${delivery.id}/retry`
    const refused = await stranger.request({ method: 'POST', url })
    t.equal(refused.statusCode, 403)
    await auditedOnce(t, h, refused, 'delivery.retry', 'denied', deliveryTarget, personal)
    const [untouched] = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, delivery.id))
    t.equal(untouched?.status, 'failed', 'a refused retry changes nothing')

    const res = await admin.request({ method: 'POST', url })
    t.equal(res.statusCode, 202)
    await auditedOnce(t, h, res, 'delivery.retry', 'success', deliveryTarget, personal)
    const again = await admin.request({ method: 'POST', url })
    t.equal(again.statusCode, 409)
    await auditedOnce(t, h, again, 'delivery.retry', 'denied', deliveryTarget, personal)
  })
})

t.test('a note written by closing or withdrawing has its own note.create event', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const noteText = 'Canary note text about the person'
  const personal = ['Canary', referrer.user.email, caseworker.user.email]

  const newShare = async () => {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json<{ id: string }>()
    const share = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).json<{ id: string }>()
    return { referralId: referral.id, shareId: share.id, url: `/v1/referrals/${referral.id}/shares/${share.id}` }
  }
  /** The one note.create of the request names the note it wrote, on the referral. */
  const notedOnce = async (t: Test, res: LightMyRequestResponse, referralId: string) => {
    const written = await h.database.db.select().from(notes).where(eq(notes.referralId, referralId))
    t.equal(written.length, 1, 'one note written')
    await auditedOnce(t, h, res, 'note.create', 'success', { type: 'note', id: written[0]?.id ?? '' }, personal)
    t.equal((await eventsOf(h, res)).find((event) => event.action === 'note.create')?.referralId, referralId)
  }

  t.test('closing a share with an outcome note', async (t) => {
    const { referralId, url } = await newShare()
    t.equal((await caseworker.request({ method: 'POST', url: `${url}/accept` })).statusCode, 200)
    const res = await caseworker.request({ method: 'POST', url: `${url}/close`, payload: { outcome: 'supported', note: noteText } })
    t.equal(res.statusCode, 200)
    await notedOnce(t, res, referralId)
    t.equal((await eventsOf(h, res)).filter((event) => event.action === 'share.close').length, 1, 'beside the share.close')
  })

  t.test('withdrawing a share with a reason', async (t) => {
    const { referralId, url } = await newShare()
    const res = await referrer.request({ method: 'POST', url: `${url}/withdraw`, payload: { reason: noteText } })
    t.equal(res.statusCode, 200)
    await notedOnce(t, res, referralId)
  })

  t.test('withdrawing without a reason writes no note and no note.create', async (t) => {
    const { url } = await newShare()
    const res = await referrer.request({ method: 'POST', url: `${url}/withdraw`, payload: {} })
    t.equal(res.statusCode, 200)
    t.equal((await eventsOf(h, res)).filter((event) => event.action === 'note.create').length, 0)
  })

  t.test('closing a referral with a note', async (t) => {
    const { referralId } = await newShare()
    const res = await referrer.request({ method: 'POST', url: `/v1/referrals/${referralId}/close`, payload: { outcome: 'supported', note: noteText } })
    t.equal(res.statusCode, 200)
    await notedOnce(t, res, referralId)
  })
})
