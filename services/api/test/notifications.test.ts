import { createHmac } from 'node:crypto'
import { randomUUID } from 'node:crypto'
import { lookup } from 'node:dns/promises'
import { hostname } from 'node:os'
import { auditEvents, isPublicAddress, notifications, outbox, publicOnlyLookup, queueOf, shares, webhookDeliveries, webhooks } from '@haven/schema'
import { createQueues, deliverWebhook, deliveryEnded, endpointPace, expireShares, loadWorkerConfig, relayOutbox, remindShares, removeQueues, singleSlots, webhookBatchRunner, webhookStore } from '@haven/worker'
import { Queue, UnrecoverableError, Worker } from 'bullmq'
import { and, eq, inArray, sql } from 'drizzle-orm'
import { Redis } from 'ioredis'
import t from 'tap'
import { startReceiver, startSmtp, startTestWorker } from './channels.ts'
import { buildHarness, freshDatabaseUrl, makeAgency, referralBodies, signedIn, waitFor } from './helper.ts'

/**
 * This machine's own name when it resolves to private addresses only (here its hosts file maps it to
 * loopback): a host name that passes the URL's own checks but resolves privately. Undefined where it
 * does not; the checks that need one are then skipped, saying so.
 */
async function privatelyResolvedName (): Promise<string | undefined> {
  const name = hostname()
  const addresses = await lookup(name, { all: true }).catch(() => [])
  return addresses.length > 0 && addresses.every((a) => !isPublicAddress(a.address)) ? name : undefined
}
const noPrivateName = `this machine's name (${hostname()}) does not resolve to private addresses only: no host name to check with`

t.test('a share reaches the recipient in-app, by email and by signed webhook, and the answer comes back', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const smtp = await startSmtp(t)
  const receiver = await startReceiver(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  await startTestWorker(t, { DATABASE_URL: databaseUrl, SMTP_URL: smtp.url })

  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const registered = await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: receiver.url, events: ['share.created', 'share.withdrawn'] } })
  t.equal(registered.statusCode, 201)
  const { secret } = registered.json()
  t.match(secret, /^whsec_/)

  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent() })).json()
  const share = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).json()

  const inbox = await waitFor(async () => {
    const res = await caseworker.request({ method: 'GET', url: '/v1/notifications?unread=true' })
    return res.json().items.length > 0 ? res.json().items : undefined
  }, 15_000, 'the in-app notification')
  t.equal(inbox.length, 1)
  t.same(Object.keys(inbox[0]).sort(), ['createdAt', 'id', 'readAt', 'reference', 'referralId', 'shareId', 'type'])
  t.match(inbox[0], { type: 'share.created', referralId: referral.id, shareId: share.id, reference: referral.reference, readAt: null })
  t.equal((await caseworker.request({ method: 'POST', url: `/v1/notifications/${inbox[0].id}/read` })).statusCode, 204)
  t.same((await caseworker.request({ method: 'GET', url: '/v1/notifications?unread=true' })).json().items, [])
  t.equal((await referrer.request({ method: 'POST', url: `/v1/notifications/${inbox[0].id}/read` })).statusCode, 404, 'someone else\'s notification')

  const hook = await waitFor(async () => receiver.received[0], 15_000, 'the webhook')
  const body = JSON.parse(hook.body)
  t.same(body, {
    id: hook.headers['haven-event-id'],
    type: 'share.created',
    occurredAt: body.occurredAt,
    data: { referralId: referral.id, reference: referral.reference, shareId: share.id, agencyId: ngo.id, status: 'pending' }
  })
  const signature = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(hook.headers['haven-signature']))
  t.ok(signature, 'Haven-Signature: t=…,v1=…')
  const expected = createHmac('sha256', secret).update(`${signature?.[1]}.${hook.body}`).digest('hex')
  t.equal(signature?.[2], expected, 'the HMAC verifies with the secret shown at registration')

  const mail = await waitFor(async () => smtp.messages[0], 15_000, 'the email')
  t.same(mail.to, [ngo.contactEmail])
  t.match(mail.raw, referral.reference)
  // Quoted-printable wraps long lines with soft breaks ("=" at the end of a line).
  t.match(mail.raw.replace(/=\r\n/g, ''), `https://haven.example.org/referrals/${referral.id}`)

  t.equal((await caseworker.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares/${share.id}/accept` })).statusCode, 200)
  const answer = await waitFor(async () => {
    const items = (await referrer.request({ method: 'GET', url: '/v1/notifications' })).json().items
    return items.find((n: { type: string }) => n.type === 'share.accepted')
  }, 15_000, 'the origin\'s notification')
  t.equal(answer.shareId, share.id)
  await waitFor(async () => smtp.messages.find((m) => m.to.includes(police.contactEmail)), 15_000, 'the email to the origin')
  t.equal(receiver.received.length, 1, 'share.accepted is not among the webhook\'s events')

  for (const text of [...smtp.messages.map((m) => m.raw), ...receiver.received.map((r) => r.body)]) {
    t.notOk(text.includes('Canary'), 'no personal data on any channel')
  }
  const deliveries = await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks/${registered.json().id}/deliveries` })
  t.equal(deliveries.statusCode, 200)
  t.match(deliveries.json().items, [{ status: 'delivered', type: 'share.created', attempts: 1, lastStatusCode: 200 }])
})

t.test('expiry and reminders: the sweeper, through the state machine, exactly once, to the people who must act', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl } })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  const late = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).json()
  const other = await makeAgency(h)
  const policeCaseworker = await signedIn(h, ['caseworker'], police.id)
  const policeAdmin = await signedIn(h, ['agency_admin'], police.id)
  const ngoCaseworker = await signedIn(h, ['caseworker'], ngo.id)
  const otherCaseworker = await signedIn(h, ['caseworker'], other.id)
  const halfway = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: other.id, respondWithinHours: 10 } })).json()
  await h.database.db.update(shares).set({ respondBy: sql`now() - interval '1 minute'` }).where(eq(shares.id, late.id))
  await h.database.db.update(shares).set({ createdAt: sql`now() - interval '6 hours'`, respondBy: sql`now() + interval '4 hours'` }).where(eq(shares.id, halfway.id))

  const [expired, again] = await Promise.all([expireShares(h.database), expireShares(h.database)])
  t.equal((expired ?? 0) + (again ?? 0), 1, 'two sweepers at once expire it once')
  const [row] = await h.database.db.select().from(shares).where(eq(shares.id, late.id))
  t.equal(row?.status, 'expired')
  const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.targetId, late.id), eq(auditEvents.action, 'share.expire')))
  t.equal(events.length, 1)
  t.equal(events[0]?.recipientAgencyId, ngo.id)
  t.equal((await remindShares(h.database)) + (await remindShares(h.database)), 1, 'one reminder, however often it sweeps')
  const messages = await h.database.db.select().from(outbox).where(sql`${outbox.payload}->>'referralId' = ${referral.id}`)
  t.same(messages.map((m) => m.type).filter((type) => type !== 'share.created').sort(), ['share.expired', 'share.reminder'])

  // Routed (fanout.ts): the expiry to the origin's referrer and caseworkers, the reminder to the
  // recipient's caseworkers; nobody else.
  await startTestWorker(t, { DATABASE_URL: databaseUrl })
  const heard = async (user: typeof referrer) =>
    ((await user.request({ method: 'GET', url: '/v1/notifications' })).json().items as { type: string, shareId: string }[]).map((n) => `${n.type} ${n.shareId}`).sort()
  await waitFor(async () => (await heard(otherCaseworker)).length === 2 && (await heard(policeCaseworker)).length === 1 && (await heard(ngoCaseworker)).length === 1 ? true : undefined, 15_000, 'the fan-out')
  t.same(await heard(referrer), [`share.expired ${late.id}`], 'the referrer hears of the expiry')
  t.same(await heard(policeCaseworker), [`share.expired ${late.id}`], 'so do the origin\'s caseworkers')
  t.same(await heard(policeAdmin), [], 'its admins do not')
  t.same(await heard(otherCaseworker), [`share.created ${halfway.id}`, `share.reminder ${halfway.id}`], 'the recipient\'s caseworkers are reminded')
  t.same(await heard(ngoCaseworker), [`share.created ${late.id}`], 'the expired share\'s recipient hears nothing more')
})

t.test('webhook failures: retried, then failed and kept, retried by hand; an endpoint failing 5 times in a row is switched off', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  let healthy = false
  const receiver = await startReceiver(t, () => healthy ? 200 : 500)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const webhook = (await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: receiver.url, events: ['share.created'] } })).json()
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  const share = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).json()
  const [message] = await h.database.db.select().from(outbox).where(sql`${outbox.payload}->>'shareId' = ${share.id}`)
  const [delivery] = await h.database.db.insert(webhookDeliveries).values({ webhookId: webhook.id, eventId: message?.id ?? '', type: 'share.created' }).returning()
  const deliveryId = delivery?.id ?? ''
  const deps = { db: h.database.db, allowPrivate: true, store: webhookStore(h.database.db) }

  await t.rejects(deliverWebhook(deps, deliveryId), /HTTP 500/)
  let [row] = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, deliveryId))
  t.match(row, { status: 'pending', attempts: 1, lastStatusCode: 500, lastError: 'HTTP 500' }, 'a failed attempt stays pending for the retry')
  await t.rejects(deliverWebhook(deps, deliveryId, { final: true }), /HTTP 500/)
  ;[row] = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, deliveryId))
  t.equal(row?.status, 'failed', 'the last attempt fails it for good')

  const failed = await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks/${webhook.id}/deliveries?status=failed` })
  t.same(failed.json().items.map((d: { id: string }) => d.id), [deliveryId])
  healthy = true
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks/${webhook.id}/deliveries/${deliveryId}/retry` })).statusCode, 202)
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks/${webhook.id}/deliveries/${deliveryId}/retry` })).statusCode, 409, 'only a failed delivery is retried')
  t.equal(await deliverWebhook(deps, deliveryId), 'delivered')
  t.equal(await deliverWebhook(deps, deliveryId), 'skipped', 'delivered once, whatever runs it again')

  healthy = false
  const failFiveInARow = async () => {
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      const [event] = await h.database.db.insert(outbox).values({ type: 'share.created', payload: { referralId: referral.id, shareId: share.id, agencyId: ngo.id } }).returning()
      const [extra] = await h.database.db.insert(webhookDeliveries).values({ webhookId: webhook.id, eventId: event?.id ?? '', type: 'share.created' }).returning()
      await t.rejects(deliverWebhook(deps, extra?.id ?? '', { final: true }))
      ids.push(extra?.id ?? '')
    }
    return ids
  }
  const worn = await failFiveInARow()
  const [endpoint] = await h.database.db.select().from(webhooks).where(eq(webhooks.id, webhook.id))
  t.equal(endpoint?.status, 'disabled', 'switched off after 5 failed deliveries in a row')
  const told = await admin.request({ method: 'GET', url: '/v1/notifications' })
  t.match(told.json().items, [{ type: 'webhook.disabled', referralId: null, reference: null }], 'its agency admins are told')
  t.same((await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })).json().items.map((w: { status: string }) => w.status), ['disabled'])

  // A manual retry switches it on again; 5 more failures switch it off again, and they are told again.
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks/${webhook.id}/deliveries/${worn[0]}/retry` })).statusCode, 202)
  t.same((await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })).json().items.map((w: { status: string }) => w.status), ['active'])
  await failFiveInARow()
  t.same((await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })).json().items.map((w: { status: string }) => w.status), ['disabled'], 'switched off again')
  const toldAgain = (await admin.request({ method: 'GET', url: '/v1/notifications' })).json().items
  t.same(toldAgain.map((n: { type: string }) => n.type), ['webhook.disabled', 'webhook.disabled'], 'told each time it is switched off')
})

t.test('the outbox relay: two at once share the messages without double work; a re-run hands over nothing new', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl } })
  // No worker: the fan-out jobs stay in the queue to be counted (a prefix of the test's own).
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null })
  const prefix = `test-relay-${randomUUID().slice(0, 8)}`
  const queues = createQueues(connection, prefix)
  const events = new Queue(queueOf['event.fanout'].name, { connection, prefix })
  t.teardown(async () => {
    await events.obliterate({ force: true })
    await Promise.all([events.close(), queues.close()])
    connection.disconnect()
  })
  const messages = async (count: number) => (await h.database.db.insert(outbox).values(Array.from({ length: count }, () => ({
    type: 'share.created' as const, payload: { referralId: randomUUID(), shareId: randomUUID(), agencyId: randomUUID() }
  }))).returning({ id: outbox.id })).map((row) => row.id)
  const queued = async () => (await events.getJobs(['waiting'])).map((job) => (job.data as { outboxIds: string[] }).outboxIds)

  // 300 messages, more than one claim (200) holds: two relays at once take them between them.
  const first = await messages(300)
  const [a, b] = await Promise.all([relayOutbox(h.database, queues), relayOutbox(h.database, queues)])
  t.equal((a ?? 0) + (b ?? 0), 300, 'every message claimed once')
  const handed = (await queued()).flat()
  t.equal(handed.length, 300, 'and handed over once')
  t.same(new Set(handed), new Set(first), 'each of them')
  t.ok((await queued()).every((ids) => ids.length <= 50), 'in jobs of 50 at most')
  t.equal(await relayOutbox(h.database, queues), 0, 'nothing is due again at once')

  // As if the worker died before fanning them out: due again after the re-dispatch delay, the same
  // messages make the same jobs, which Redis still holds.
  const second = await messages(120)
  t.equal(await relayOutbox(h.database, queues), 120)
  const jobsBefore = (await queued()).length
  await h.database.db.update(outbox).set({ relayedAt: sql`now() - interval '1 minute'` }).where(inArray(outbox.id, second))
  t.equal(await relayOutbox(h.database, queues), 120, 'claimed again')
  t.equal((await queued()).length, jobsBefore, 'but no job added twice')
  t.equal((await queued()).flat().length, 420)
})

t.test('a worker without SMTP_URL takes no email job: it waits for one with it', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const prefix = `test-smtp-${randomUUID().slice(0, 8)}`
  await startTestWorker(t, { DATABASE_URL: databaseUrl, HAVEN_QUEUE_PREFIX: prefix })
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null })
  const emails = new Queue(queueOf['email.send'].name, { connection, prefix })
  t.teardown(async () => {
    await emails.close()
    connection.disconnect()
  })
  // No delivery row: a worker that takes it finds nothing to send and completes it.
  const job = await emails.add('email.send', { eventId: randomUUID(), agencyId: randomUUID() }, { jobId: `email-${randomUUID()}`, removeOnComplete: true })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(await job.getState(), 'waiting', 'left waiting by the worker without SMTP')
  const smtp = await startSmtp(t)
  await startTestWorker(t, { DATABASE_URL: databaseUrl, HAVEN_QUEUE_PREFIX: prefix, SMTP_URL: smtp.url })
  const state = await waitFor(async () => { const now = await job.getState(); return now === 'waiting' || now === 'active' ? undefined : now }, 10_000, 'the worker with SMTP to take it')
  t.equal(state, 'unknown', 'taken and completed (then removed) by the worker with SMTP')
})

t.test('two workers at once: each share reaches every channel once', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const smtp = await startSmtp(t)
  const receiver = await startReceiver(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const prefix = `test-two-${randomUUID().slice(0, 8)}`
  for (let i = 0; i < 2; i++) await startTestWorker(t, { DATABASE_URL: databaseUrl, SMTP_URL: smtp.url, HAVEN_QUEUE_PREFIX: prefix })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: receiver.url, events: ['share.created'] } })).statusCode, 201)
  const count = 40
  await Promise.all(Array.from({ length: count }, async () => {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
    t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).statusCode, 201)
  }))
  const toNgo = () => smtp.messages.filter((m) => m.to.includes(ngo.contactEmail))
  await waitFor(async () => receiver.received.length >= count && toNgo().length >= count ? true : undefined, 20_000, 'every webhook and email')
  // Time for a second delivery of anything, had both workers taken it.
  await new Promise((resolve) => setTimeout(resolve, 1500))
  const eventIds = receiver.received.map((hook) => String(hook.headers['haven-event-id']))
  t.equal(eventIds.length, count, 'one webhook a share')
  t.equal(new Set(eventIds).size, count, 'each event once')
  t.equal(toNgo().length, count, 'one email a share')
  const [inApp] = await h.database.rows<{ n: number }>(sql`select count(*)::int as n from notifications where user_id = ${caseworker.user.id}`)
  t.equal(inApp?.n, count, 'one notification a share for the caseworker')
  const [processed] = await h.database.rows<{ n: number }>(sql`select count(*)::int as n from outbox where processed_at is not null`)
  t.equal(processed?.n, count)
})

t.test('first attempts go in batches per endpoint; a failed one goes on as a single job; a batch run again tries nothing twice', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const failingEvents = new Set<string>()
  /** Events whose POST is answered only when the test says so. */
  const heldEvents = new Map<string, Promise<number>>()
  const receiver = await startReceiver(t, (hook) => {
    const eventId = String(hook.headers['haven-event-id'])
    return heldEvents.get(eventId) ?? (failingEvents.has(eventId) ? 500 : 200)
  })
  const slow = await startReceiver(t, () => ({ status: 200, afterMs: 800 }))
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const register = async (url: string) => (await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url, events: ['share.created'] } })).json<{ id: string }>().id
  const webhookId = await register(receiver.url)
  const slowWebhookId = await register(slow.url)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  const share = (await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).json()
  const deliveries = async (target: string, rows: { attempts?: number, generation?: number }[]) => {
    const events = await h.database.db.insert(outbox).values(rows.map(() => ({ type: 'share.created' as const, payload: { referralId: referral.id, shareId: share.id, agencyId: ngo.id } }))).returning()
    const made = await h.database.db.insert(webhookDeliveries).values(events.map((event, i) => ({ webhookId: target, eventId: event.id, type: 'share.created' as const, ...rows[i] }))).returning()
    return made.map((d) => ({ id: d.id, eventId: d.eventId }))
  }
  const rowsOf = async (ids: string[]) => new Map((await h.database.db.select().from(webhookDeliveries).where(inArray(webhookDeliveries.id, ids))).map((row) => [row.id, row]))
  const deps = { db: h.database.db, allowPrivate: true, store: webhookStore(h.database.db) }
  const retried: string[][] = []
  const singles: string[][] = []
  const handOver = { retry: async (_webhookId: string, ids: string[]) => { retried.push([...ids]) }, single: async (_webhookId: string, ids: string[]) => { singles.push([...ids]) } }
  const run = webhookBatchRunner(deps, { handOver, slowAfterMs: 300, slowForMs: 1000 })

  // Fresh and answered, fresh and refused, attempted before, retried by hand.
  const [answered, refused, attempted, manual] = await deliveries(webhookId, [{}, {}, { attempts: 1 }, { generation: 1 }])
  failingEvents.add(refused?.eventId ?? '')
  const ids = [answered, refused, attempted, manual].map((d) => d?.id ?? '')
  await run({ webhookId, deliveryIds: ids })
  t.equal(receiver.received.length, 2, 'only the deliveries never attempted are tried')
  const rows = await rowsOf(ids)
  t.match(rows.get(ids[0] ?? ''), { status: 'delivered', attempts: 1, lastStatusCode: 200 })
  t.match(rows.get(ids[1] ?? ''), { status: 'pending', attempts: 1, lastStatusCode: 500, lastError: 'HTTP 500' }, 'the failure is recorded as for any attempt')
  t.match(rows.get(ids[2] ?? ''), { status: 'pending', attempts: 1, lastStatusCode: null }, 'an attempted delivery is not tried again')
  t.match(rows.get(ids[3] ?? ''), { status: 'pending', attempts: 0, generation: 1 }, 'a manual retry is its own job\'s')
  t.same(retried, [[ids[1], ids[2]]], 'the refused one, and the attempted one, are handed on for their retries')
  await run({ webhookId, deliveryIds: ids })
  t.equal(receiver.received.length, 2, 'run again (a crash, a stalled job), the batch POSTs nothing twice')
  t.same(retried[1], [ids[1], ids[2]], 'and hands the attempted ones over again (their job ids make that a no-op if the jobs exist)')

  // A hand-over that fails fails the batch; run again, it hands the delivery over without a POST.
  const [lost] = await deliveries(webhookId, [{}])
  failingEvents.add(lost?.eventId ?? '')
  const failingHandOver = webhookBatchRunner(deps, { handOver: { ...handOver, retry: async () => { throw new Error('Redis is away') } } })
  await t.rejects(failingHandOver({ webhookId, deliveryIds: [lost?.id ?? ''] }), /Redis is away/)
  t.equal(receiver.received.length, 3)
  await run({ webhookId, deliveryIds: [lost?.id ?? ''] })
  t.equal(receiver.received.length, 3, 'no second POST')
  t.same(retried.at(-1), [lost?.id], 'handed over on the run again')

  // An endpoint with a batch running for slowAfterMs (300 ms here) is slow: its batches go as single
  // jobs while it runs, and for slowForMs (1 s here) after it ends.
  const [first, second, third, fourth] = await deliveries(slowWebhookId, [{}, {}, {}, {}])
  const running = run({ webhookId: slowWebhookId, deliveryIds: [first?.id ?? ''] })
  await new Promise((resolve) => setTimeout(resolve, 400))
  await run({ webhookId: slowWebhookId, deliveryIds: [second?.id ?? ''] })
  t.same(singles, [[second?.id]], 'a batch for an endpoint already slow goes on as single jobs')
  t.equal(slow.received.length, 1, 'without a POST of its own')
  await running
  await run({ webhookId: slowWebhookId, deliveryIds: [third?.id ?? ''] })
  t.same(singles[1], [third?.id], 'and so for a while after its slow batch ended')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  await run({ webhookId: slowWebhookId, deliveryIds: [fourth?.id ?? ''] })
  t.equal(slow.received.length, 2, 'then the endpoint gets batches again')

  // One endpoint runs at most `perEndpoint` batches at once (1 here): the next answers 'busy'
  // without a POST (the worker holds its job back), while another endpoint's batch runs.
  const oneAtATime = webhookBatchRunner(deps, { handOver, slowAfterMs: 5000, perEndpoint: 1 })
  const [fifth, sixth] = await deliveries(slowWebhookId, [{}, {}])
  const [other] = await deliveries(webhookId, [{}])
  const inFlight = oneAtATime({ webhookId: slowWebhookId, deliveryIds: [fifth?.id ?? ''] })
  await waitFor(async () => slow.received.length === 3 ? true : undefined, 5000, 'the first batch\'s POST')
  t.equal(await oneAtATime({ webhookId: slowWebhookId, deliveryIds: [sixth?.id ?? ''] }), 'busy', 'a second batch for the same endpoint is busy')
  const othersBefore = receiver.received.length
  t.equal(await oneAtATime({ webhookId, deliveryIds: [other?.id ?? ''] }), undefined, 'another endpoint\'s batch runs meanwhile')
  t.equal(receiver.received.length, othersBefore + 1)
  await inFlight
  t.equal(slow.received.length, 3, 'the busy batch POSTed nothing')
  t.equal(await oneAtATime({ webhookId: slowWebhookId, deliveryIds: [sixth?.id ?? ''] }), undefined, 'once the first has ended, it runs')
  t.equal(slow.received.length, 4)
  // Those batches ended within slowAfterMs: the endpoint answers quickly, and gets every slot.
  const [seventh, eighth] = await deliveries(slowWebhookId, [{}, {}])
  t.same(await Promise.all([seventh, eighth].map(async (d) => await oneAtATime({ webhookId: slowWebhookId, deliveryIds: [d?.id ?? ''] }))), [undefined, undefined], 'an endpoint known to answer quickly runs batches side by side')
  t.equal(slow.received.length, 6)

  // The database counts attempts across jobs: the 9th recorded attempt is the last, whatever the
  // job says, once only however many runs make it at once, and it ends the endpoint's streak count.
  const max = queueOf['webhook.deliver'].attempts
  const [worn] = await deliveries(webhookId, [{ attempts: max - 1 }])
  failingEvents.add(worn?.eventId ?? '')
  const [before] = await h.database.db.select().from(webhooks).where(eq(webhooks.id, webhookId))
  const twice = await Promise.allSettled([deliverWebhook(deps, worn?.id ?? ''), deliverWebhook(deps, worn?.id ?? '')])
  t.ok(twice.every((result) => result.status === 'rejected'), 'both runs fail')
  t.equal(twice.filter((result) => result.status === 'rejected' && deliveryEnded(result.reason)).length, 1, 'one of them ends the delivery')
  t.match((await rowsOf([worn?.id ?? ''])).get(worn?.id ?? ''), { status: 'failed', attempts: max }, `${max} attempts, not ${max + 1}`)
  const [after] = await h.database.db.select().from(webhooks).where(eq(webhooks.id, webhookId))
  t.equal(after?.consecutiveFailures, (before?.consecutiveFailures ?? 0) + 1, 'one failed delivery in the endpoint\'s streak')

  // A job of an older generation (queued before a manual retry) does nothing.
  const [renewed] = await deliveries(webhookId, [{ generation: 1 }])
  t.equal(await deliverWebhook(deps, renewed?.id ?? '', { final: true, generation: 0 }), 'skipped')
  t.match((await rowsOf([renewed?.id ?? ''])).get(renewed?.id ?? ''), { status: 'pending', attempts: 0 }, 'the manual retry keeps every attempt')

  // An attempt in flight when the delivery is retried by hand fails afterwards: it counts against
  // the generation it was made for, not the retry's.
  const [overtaken] = await deliveries(webhookId, [{ attempts: max - 1 }])
  let answer: (status: number) => void = () => {}
  heldEvents.set(overtaken?.eventId ?? '', new Promise((resolve) => { answer = resolve }))
  const [streakBefore] = await h.database.db.select().from(webhooks).where(eq(webhooks.id, webhookId))
  const inFlightAttempt = deliverWebhook(deps, overtaken?.id ?? '', { final: true, generation: 0 })
  await waitFor(async () => receiver.received.some((hook) => hook.headers['haven-event-id'] === overtaken?.eventId) ? true : undefined, 5000, 'the POST')
  await h.database.db.update(webhookDeliveries).set({ attempts: 0, generation: 1 }).where(eq(webhookDeliveries.id, overtaken?.id ?? ''))
  answer(500)
  await t.rejects(inFlightAttempt, /HTTP 500/)
  t.match((await rowsOf([overtaken?.id ?? ''])).get(overtaken?.id ?? ''), { status: 'pending', attempts: 0, generation: 1, lastError: null }, 'the retry keeps every attempt')
  const [streakAfter] = await h.database.db.select().from(webhooks).where(eq(webhooks.id, webhookId))
  t.equal(streakAfter?.consecutiveFailures, streakBefore?.consecutiveFailures, 'nor does it count in the endpoint\'s streak')

  // On a Redis of the machine's, under a prefix of the test's own.
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null })
  const prefix = `test-batches-${randomUUID().slice(0, 8)}`
  const queues = createQueues(connection, prefix)
  const batchQueue = new Queue(queueOf['webhook.deliverBatch'].name, { connection, prefix })
  const singleQueue = new Queue(queueOf['webhook.deliver'].name, { connection, prefix })
  t.teardown(async () => {
    for (const queue of [batchQueue, singleQueue]) await queue.obliterate({ force: true })
    await Promise.all([batchQueue.close(), singleQueue.close(), queues.close()])
    connection.disconnect()
  })
  const endpointA = Array.from({ length: 20 }, () => ({ id: randomUUID(), webhookId: 'a' }))
  const endpointB = Array.from({ length: 3 }, () => ({ id: randomUUID(), webhookId: 'b' }))
  await queues.addWebhookBatches([...endpointA.slice(0, 10), ...endpointB, ...endpointA.slice(10)])
  const batches = (await batchQueue.getJobs(['waiting'])).map((job) => job.data as { webhookId: string, deliveryIds: string[] })
  t.same(batches.map((batch) => batch.deliveryIds.length).sort((a, b) => a - b), [4, 16], 'at most 16 a batch')
  t.same(batches.flatMap((batch) => batch.deliveryIds).sort(), endpointA.map((d) => d.id).sort(), 'every delivery of the endpoint with many once')
  t.ok(batches.every((batch) => batch.webhookId === 'a'), 'one endpoint a batch, the one it names')
  const fewer = await singleQueue.getJobs(['waiting'])
  t.same(fewer.map((job) => job.id).sort(), endpointB.map((d) => `webhook-${d.id}-0`).sort(), 'an endpoint with fewer than 4 gets single jobs')
  t.ok(fewer.every((job) => job.opts.attempts === queueOf['webhook.deliver'].attempts && (job.opts.delay ?? 0) === 0), 'with every attempt, at once')
  await singleQueue.obliterate({ force: true })
  const [one, two] = endpointA.map((d) => d.id)
  await queues.retryWebhooks('a', [one ?? '', two ?? ''])
  await queues.addWebhooks([{ id: one ?? '', generation: 0 }])
  const retries = await singleQueue.getJobs(['delayed', 'waiting'])
  t.same(retries.map((job) => job.id).sort(), [`webhook-${one}-0`, `webhook-${two}-0`].sort(), 'the re-dispatch of the same delivery adds nothing while its retry waits')
  for (const job of retries) {
    t.equal((job.data as { webhookId?: string }).webhookId, 'a', 'naming its endpoint, for its share of the slots')
    t.equal(job.opts.attempts, queueOf['webhook.deliver'].attempts - 1, 'the attempts left after the first')
    t.ok((job.opts.delay ?? 0) >= 500 && (job.opts.delay ?? 0) <= 1000, `the first retry after about one backoff (${job.opts.delay} ms)`)
    t.match(job.opts.backoff, { type: 'exponential', delay: 2 * queueOf['webhook.deliver'].backoffMs }, 'then twice that, doubling')
  }
})

t.test('work whose job failed for good can be handed over again: a failed job keeps no hold on its id', async (t) => {
  // Jobs have fixed ids (jobs.ts), and adding an id Redis still holds adds nothing. A job that used
  // up its attempts while PostgreSQL was down, or stalled twice, leaves its work pending in the
  // database; the relay and the sweeper hand it over again with the same id, which must run.
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null })
  const prefix = `test-failed-${randomUUID().slice(0, 8)}`
  const queues = createQueues(connection, prefix)
  const runs = new Map<string, number>()
  const failed: string[] = []
  const completed: string[] = []
  const names = (['event.fanout', 'email.send', 'webhook.deliver'] as const).map((name) => queueOf[name].name)
  const workers = names.map((name) => {
    const worker = new Worker(name, async (job) => {
      const run = (runs.get(job.id ?? '') ?? 0) + 1
      runs.set(job.id ?? '', run)
      // The first run fails for good, as a job whose attempts are spent.
      if (run === 1) throw new UnrecoverableError('PostgreSQL is down')
    }, { connection, prefix })
    worker.on('failed', (job) => { failed.push(job?.id ?? '') })
    worker.on('completed', (job) => { completed.push(job.id ?? '') })
    return worker
  })
  t.teardown(async () => {
    await Promise.all(workers.map(async (worker) => { await worker.close() }))
    await queues.close()
    connection.disconnect()
    await removeQueues(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', prefix)
  })
  const [outboxId, agencyId, deliveryId] = [randomUUID(), randomUUID(), randomUUID()]
  const handOver = async () => {
    await queues.addFanout([outboxId])
    await queues.addEmails([{ eventId: outboxId, agencyId }])
    await queues.addWebhooks([{ id: deliveryId, generation: 0 }])
  }
  await handOver()
  await waitFor(async () => failed.length === 3 ? true : undefined, 15_000, 'three jobs failed')
  await handOver()
  await waitFor(async () => completed.length === 3 ? true : undefined, 15_000, 'the same three jobs, handed over again, run')
  t.same([...runs.values()], [2, 2, 2], 'each job ran twice: failed, then handed over and done')
})

t.test('an endpoint\'s pace and its single slots, as the worker holds jobs back', async (t) => {
  const pace = endpointPace(100, 1000)
  const now = 1_000_000
  t.notOk(pace.quick('a', now) || pace.slow('a', now), 'unknown at first: neither')
  pace.ended('a', now - 50, now)
  t.ok(pace.quick('a', now + 10), 'an attempt under slowAfterMs: quick')
  pace.ended('a', now - 150, now + 20)
  t.ok(pace.slow('a', now + 30) && !pace.quick('a', now + 30), 'one at slowAfterMs or more: slow, and no longer quick')
  pace.ended('a', now + 40, now + 50)
  t.notOk(pace.quick('a', now + 60), 'still slow for forMs, whatever answers quickly meanwhile')
  t.notOk(pace.slow('a', now + 1100), 'then forgotten')

  // Single slots: 2 an endpoint (3 if quick), 3 in all for the slow ones, here.
  const slots = singleSlots(endpointPace(100, 1000), { perEndpoint: 2, quick: 3, slowInAll: 3 })
  const slotOf = (taken: ReturnType<typeof slots.take>) => 'slot' in taken ? taken.slot : undefined
  const first = slotOf(slots.take('b', now))
  t.ok(first !== undefined && slotOf(slots.take('b', now)) !== undefined, 'two of two for an endpoint not yet known')
  t.same(slots.take('b', now + 10), { holdMs: 50 }, 'a third is held back a moment')
  t.ok(slotOf(slots.take('c', now + 10)) !== undefined, 'another endpoint has slots of its own')
  t.match(slots.take('b', now + 100), { holdMs: 1000 }, 'once one of its jobs has run for slowAfterMs, longer')
  t.equal(slotOf(slots.take('c', now + 110)), undefined, 'and the slow ones (b with 2, c now stuck too) have their 3 in all')
  for (let i = 0; i < 2; i++) slots.take('b', now + 120)
  t.match(slots.take('b', now + 130), { holdMs: 3000 }, 'the more of its jobs held back lately, the longer (4 in 2 s: 1 s and 2 more)')
  if (first !== undefined) slots.give(first)
  t.ok(slotOf(slots.take('d', now + 140)) !== undefined, 'an endpoint not slow is not held back by the slow ones')
})

t.test('end to end: shares made while the worker was away go out in a batch; a refused first attempt is retried on its own and arrives', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  // Every third event is refused on its first POST only.
  const order = new Map<string, number>()
  const receiver = await startReceiver(t, (hook) => {
    const id = String(hook.headers['haven-event-id'])
    if (order.has(id)) return 200
    order.set(id, order.size)
    return (order.size - 1) % 3 === 0 ? 500 : 200
  })
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const webhook = (await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: receiver.url, events: ['share.created'] } })).json<{ id: string }>()
  const count = 10
  for (let i = 0; i < count; i++) {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
    t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).statusCode, 201)
  }

  // Which queues carried the work: their completed jobs, read from the queues' event streams.
  const prefix = `test-e2e-${randomUUID().slice(0, 8)}`
  const connection = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { maxRetriesPerRequest: null })
  t.teardown(() => { connection.disconnect() })
  // A pool of one: the sealer's transactions, the relay, the sweeper and the deliveries take turns.
  await startTestWorker(t, { DATABASE_URL: databaseUrl, HAVEN_QUEUE_PREFIX: prefix, HAVEN_WORKER_DB_CONNECTIONS: '1' })
  let workerBackends = 0
  const rows = await waitFor(async () => {
    const [seen] = await h.database.rows<{ n: number }>(sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'haven-worker' and backend_type = 'client backend'`)
    workerBackends = Math.max(workerBackends, seen?.n ?? 0)
    const all = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.webhookId, webhook.id))
    return all.length === count && all.every((d) => d.status === 'delivered') ? all : undefined
  }, 20_000, 'every delivery to be delivered')
  t.equal(workerBackends, 2, 'the worker used its pool of one and its LISTEN connection, no more')
  const completed = async (queue: string) => (await connection.xrange(`${prefix}:${queue}:events`, '-', '+'))
    .filter(([, fields]) => fields[0] === 'event' && fields[1] === 'completed').length

  const posts = new Map<string, number>()
  for (const hook of receiver.received) posts.set(String(hook.headers['haven-event-id']), (posts.get(String(hook.headers['haven-event-id'])) ?? 0) + 1)
  t.equal(posts.size, count, 'every event arrived')
  const refused = [...order].filter(([, i]) => i % 3 === 0).map(([id]) => id)
  t.same([...posts].filter(([, n]) => n === 2).map(([id]) => id).sort(), [...refused].sort(), 'the refused ones twice, the rest once')
  t.same(rows.filter((d) => d.attempts === 2).map((d) => d.eventId).sort(), [...refused].sort(), 'two attempts recorded for the refused ones, one for the rest')
  // A job's completion reaches its queue's event stream just after its handler's write.
  const jobs = await waitFor(async () => {
    const counts = { batches: await completed(queueOf['webhook.deliverBatch'].name), singles: await completed(queueOf['webhook.deliver'].name) }
    return counts.singles >= refused.length ? counts : undefined
  }, 5000, 'the jobs to complete')
  t.same(jobs, { batches: 1, singles: refused.length }, 'the first attempts in one batch, each retry a single job of its own')
})

t.test('the worker\'s configuration: its database pool, its retry delays', async (t) => {
  t.equal(loadWorkerConfig({}).databaseConnections, 3, 'a small pool by default')
  t.equal(loadWorkerConfig({ HAVEN_WORKER_DB_CONNECTIONS: '12' }).databaseConnections, 12)
  for (const value of ['0', '-1', 'many', '101']) t.throws(() => loadWorkerConfig({ HAVEN_WORKER_DB_CONNECTIONS: value }), /HAVEN_WORKER_DB_CONNECTIONS must be a whole number from 1 to 100/, value)
  t.equal(loadWorkerConfig({}).retryDelayScale, 1, 'retry delays as in jobs.ts by default')
  t.equal(loadWorkerConfig({ HAVEN_RETRY_DELAY_SCALE: '15' }).retryDelayScale, 15)
  t.equal(loadWorkerConfig({ HAVEN_RETRY_DELAY_SCALE: '0.01' }).retryDelayScale, 0.01)
  for (const value of ['0', '0.001', '-1', '1e3', 'slow', '101']) t.throws(() => loadWorkerConfig({ HAVEN_RETRY_DELAY_SCALE: value }), /HAVEN_RETRY_DELAY_SCALE must be a number from 0.01 to 100/, value)
})

t.test('webhook registration: https and public targets only, own agency admins only', async (t) => {
  const h = await buildHarness(t)
  const ngo = await makeAgency(h)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const register = async (url: string, caller = admin) => await caller.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url, events: ['share.created'] } })
  for (const url of ['http://receiver.example.org/hooks', 'https://127.0.0.1/hooks', 'https://10.1.2.3/x', 'https://169.254.169.254/latest', 'https://[::1]/x',
    'https://[::ffff:10.0.0.1]/x', 'https://[fe80::1]/x', 'https://[::127.0.0.1]/x', 'https://[64:ff9b:1::a00:1]/x', 'https://[2002:7f00:1::]/x', 'https://[fec0::1]/x', 'https://localhost/x', 'https://user:pw@receiver.example.org/x', 'not a url']) {
    const res = await register(url)
    t.equal(res.statusCode, 422, url)
    t.same(res.json().errors.map((e: { path: string }) => e.path), ['/body/url'])
  }
  const privateName = await privatelyResolvedName()
  if (privateName === undefined) t.skip(noPrivateName, () => {})
  else {
    const named = await register(`https://${privateName}/hooks`)
    t.equal(named.statusCode, 422, 'a host name that resolves to a private address')
    t.same(named.json().errors, [{ path: '/body/url', message: 'resolves to a loopback, private or link-local address' }])
  }
  t.equal((await register('https://93.184.215.14/hooks')).statusCode, 201, 'a public address')
  const list = await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })
  t.equal(list.statusCode, 200)
  t.equal(list.json().items.length, 1)
  t.notOk('secret' in list.json().items[0], 'no secret in a list')
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  t.equal((await register('https://93.184.215.14/hooks', caseworker)).statusCode, 403)
  const otherAdmin = await signedIn(h, ['agency_admin'])
  t.equal((await register('https://93.184.215.14/hooks', otherAdmin)).statusCode, 403)
  t.equal((await otherAdmin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })).statusCode, 403)
  const id = list.json().items[0].id
  const webhookUrl = `/v1/agencies/${ngo.id}/webhooks`
  for (const [method, url] of [['GET', webhookUrl], ['POST', webhookUrl], ['DELETE', `${webhookUrl}/${id}`], ['GET', `${webhookUrl}/${id}/deliveries`],
    ['POST', `${webhookUrl}/${id}/deliveries/${randomUUID()}/retry`]] as const) {
    t.equal((await h.app.inject({ method, url, ...(method === 'POST' ? { payload: { url: 'https://93.184.215.14/x', events: ['share.created'] } } : {}) })).statusCode, 401, `${method} ${url} without a token`)
  }
  const unknownDelivery = await admin.request({ method: 'POST', url: `${webhookUrl}/${id}/deliveries/${randomUUID()}/retry` })
  t.equal(unknownDelivery.statusCode, 404, 'retrying a delivery that does not exist')
  t.equal((await otherAdmin.request({ method: 'DELETE', url: `/v1/agencies/${ngo.id}/webhooks/${id}` })).statusCode, 403)
  t.equal((await admin.request({ method: 'DELETE', url: `/v1/agencies/${ngo.id}/webhooks/${id}` })).statusCode, 204)
  t.equal((await admin.request({ method: 'DELETE', url: `/v1/agencies/${ngo.id}/webhooks/${id}` })).statusCode, 404)
  t.same((await admin.request({ method: 'GET', url: `/v1/agencies/${ngo.id}/webhooks` })).json().items, [])
  const audited = await h.database.db.select().from(auditEvents).where(eq(auditEvents.targetId, id))
  t.same(audited.map((e) => `${e.action} ${e.outcome}`).sort(), ['webhook.create success', 'webhook.delete denied', 'webhook.delete success'])
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: 'https://93.184.215.14/x', events: ['share.exploded'] } })).statusCode, 400)
  t.equal((await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: 'https://93.184.215.14/x', events: [] } })).statusCode, 400)
})

t.test('a delivery re-checks the address it connects to, and follows no redirect', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const receiver = await startReceiver(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const webhook = (await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: receiver.url.replace('127.0.0.1', 'localhost'), events: ['share.created'] } })).json()
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })
  const [message] = await h.database.db.select().from(outbox).where(sql`${outbox.payload}->>'referralId' = ${referral.id}`)
  const [delivery] = await h.database.db.insert(webhookDeliveries).values({ webhookId: webhook.id, eventId: message?.id ?? '', type: 'share.created' }).returning()
  await t.rejects(deliverWebhook({ db: h.database.db, allowPrivate: false, store: webhookStore(h.database.db) }, delivery?.id ?? ''), /https/, 'the URL is checked again at delivery')
  // A name that resolves to loopback is refused on the connection itself (DNS rebinding).
  const refused = await new Promise<NodeJS.ErrnoException | null>((resolve) => { publicOnlyLookup(false)('localhost', {}, (error) => { resolve(error) }) })
  t.equal(refused?.code, 'EHAVENPRIVATE', 'the lookup hook refuses a loopback answer')
  // An https URL whose host name passes the URL check but resolves privately: the delivery's own
  // connection refuses it (without the hook it would connect, and fail otherwise: on TLS, or refused).
  const privateName = await privatelyResolvedName()
  if (privateName === undefined) t.skip(noPrivateName, () => {})
  else {
    const registeredUrl = webhook.url as string
    await h.database.db.update(webhooks).set({ url: `https://${privateName}:${new URL(receiver.url).port}/hooks` }).where(eq(webhooks.id, webhook.id))
    await t.rejects(deliverWebhook({ db: h.database.db, allowPrivate: false, store: webhookStore(h.database.db) }, delivery?.id ?? ''), /non-public address/, 'a name resolving privately is refused at delivery')
    const [recorded] = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, delivery?.id ?? ''))
    t.match(recorded, { status: 'pending', lastError: 'the host resolves to a non-public address' })
    await h.database.db.update(webhooks).set({ url: registeredUrl }).where(eq(webhooks.id, webhook.id))
  }
  t.equal(receiver.received.length, 0, 'nothing was sent')
  t.equal(await deliverWebhook({ db: h.database.db, allowPrivate: true, store: webhookStore(h.database.db) }, delivery?.id ?? ''), 'delivered', 'allowed only with HAVEN_WEBHOOK_ALLOW_PRIVATE')

  // A redirect is a failed attempt: its target hears nothing.
  const target = await startReceiver(t)
  const redirecting = await startReceiver(t, () => ({ status: 302, afterMs: 0, headers: { location: target.url } }))
  const moved = (await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url: redirecting.url, events: ['share.created'] } })).json()
  const [movedDelivery] = await h.database.db.insert(webhookDeliveries).values({ webhookId: moved.id, eventId: message?.id ?? '', type: 'share.created' }).returning()
  await t.rejects(deliverWebhook({ db: h.database.db, allowPrivate: true, store: webhookStore(h.database.db) }, movedDelivery?.id ?? ''), /redirect 302 not followed/)
  const [afterRedirect] = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, movedDelivery?.id ?? ''))
  t.match(afterRedirect, { status: 'pending', attempts: 1, lastStatusCode: 302, lastError: 'redirect 302 not followed' })
  t.equal(redirecting.received.length, 1)
  t.equal(target.received.length, 0, 'the redirect is not followed')
})

t.test('notifications list: own only, newest first, paginated, unread filter', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl } })
  const caseworker = await signedIn(h, ['caseworker'])
  const other = await signedIn(h, ['caseworker'])
  for (let i = 0; i < 5; i++) {
    await h.database.db.insert(notifications).values({ userId: caseworker.user.id, sourceId: crypto.randomUUID(), type: 'share.created', referralId: crypto.randomUUID(), reference: `HVN-2026-00000${i}` })
  }
  const first = await caseworker.request({ method: 'GET', url: '/v1/notifications?limit=3' })
  t.equal(first.json().items.length, 3)
  const second = await caseworker.request({ method: 'GET', url: `/v1/notifications?limit=3&cursor=${first.json().nextCursor}` })
  t.equal(second.json().items.length, 2)
  t.equal(second.json().nextCursor, null)
  t.same((await other.request({ method: 'GET', url: '/v1/notifications' })).json().items, [])
  t.equal((await caseworker.request({ method: 'GET', url: '/v1/notifications?unread=maybe' })).statusCode, 400)
  t.equal((await h.app.inject({ method: 'GET', url: '/v1/notifications' })).statusCode, 401)
  t.equal((await h.app.inject({ method: 'POST', url: `/v1/notifications/${randomUUID()}/read` })).statusCode, 401)
  t.equal((await caseworker.request({ method: 'POST', url: '/v1/notifications/not-a-uuid/read' })).statusCode, 400)
})
