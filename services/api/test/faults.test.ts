/**
 * The notification worker under faults, with real processes and a Redis of the test's own:
 * a worker killed with SIGKILL in the middle of a delivery, Redis stopped while the API works,
 * and receivers that fail or hang.
 */
import { queueOf, sql, webhookDeliveries } from '@haven/schema'
import { maxConsecutiveFailures } from '@haven/worker'
import { eq } from 'drizzle-orm'
import t, { type Test } from 'tap'
import { freePort, ownRedis, startReceiver, startSmtp, spawnWorker, startTestWorker } from './channels.ts'
import { buildHarness, freshDatabaseUrl, type Harness, makeAgency, referralBodies, signedIn, waitFor } from './helper.ts'

async function agencyWithWebhook (h: Harness, url: string, events = ['share.created']) {
  const ngo = await makeAgency(h)
  const admin = await signedIn(h, ['agency_admin'], ngo.id)
  const res = await admin.request({ method: 'POST', url: `/v1/agencies/${ngo.id}/webhooks`, payload: { url, events } })
  if (res.statusCode !== 201) throw new Error(res.body)
  return { ngo, admin, webhookId: res.json<{ id: string }>().id }
}

/** A database, the API, a worker in this process, a police referrer, and an agency with a webhook to each URL. */
async function deliveryScene (t: Test, urls: string[], workerEnv: Record<string, string> = {}) {
  const databaseUrl = await freshDatabaseUrl(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  await startTestWorker(t, { DATABASE_URL: databaseUrl, ...workerEnv })
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const agencies = []
  for (const url of urls) agencies.push(await agencyWithWebhook(h, url))
  return { h, referrer, agencies }
}

const byEventId = (received: { headers: Record<string, unknown> }[]) => {
  const counts = new Map<string, number>()
  for (const hook of received) {
    const id = String(hook.headers['haven-event-id'])
    counts.set(id, (counts.get(id) ?? 0) + 1)
  }
  return counts
}

t.test('kill -9 of the worker in the middle of a webhook delivery: after a restart the delivery completes', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const redis = await ownRedis(t)
  let first = true
  // The first request hangs, as if the worker died while waiting for the answer.
  const receiver = await startReceiver(t, () => { if (first) { first = false; return 'hang' } return 200 })
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, REDIS_URL: redis.url, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const env = { DATABASE_URL: databaseUrl, REDIS_URL: redis.url, HAVEN_JOB_LOCK_MS: '2000' }
  const doomed = spawnWorker(env)
  t.teardown(() => { doomed.kill('SIGKILL') })

  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const { ngo } = await agencyWithWebhook(h, receiver.url)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  t.equal((await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })).statusCode, 201)

  await waitFor(async () => receiver.received.length > 0, 30_000, 'the first delivery attempt')
  const exited = new Promise((resolve) => doomed.once('exit', resolve))
  doomed.kill('SIGKILL')
  await exited
  t.pass('the worker was killed mid-delivery')

  const successor = spawnWorker(env)
  t.teardown(() => { successor.kill('SIGKILL') })
  const delivered = await waitFor(async () => {
    const rows = await h.database.db.select().from(webhookDeliveries)
    return rows.find((row) => row.status === 'delivered')
  }, 60_000, 'the delivery to complete after the restart')
  t.ok(delivered)
  const counts = byEventId(receiver.received)
  t.equal(counts.size, 1, 'one event')
  t.ok(([...counts.values()][0] ?? 0) >= 2, 'seen at least twice (the killed attempt and the completed one): the receiver dedupes by Haven-Event-Id')
})

t.test('Redis stopped while the API creates and answers shares: the API keeps answering, and every notification arrives once', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const redis = await ownRedis(t)
  const smtp = await startSmtp(t)
  const receiver = await startReceiver(t)
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, REDIS_URL: redis.url, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  await startTestWorker(t, { DATABASE_URL: databaseUrl, REDIS_URL: redis.url, SMTP_URL: smtp.url, HAVEN_REDISPATCH_AFTER_SECONDS: '2' })
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const { ngo } = await agencyWithWebhook(h, receiver.url, ['share.created', 'share.withdrawn'])
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)

  await redis.stop()
  const ready = await h.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.json().redis, 'down')
  const statuses: number[] = []
  const referralIds: string[] = []
  for (let i = 0; i < 5; i++) {
    const created = await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent() })
    statuses.push(created.statusCode)
    referralIds.push(created.json().id)
    const share = await referrer.request({ method: 'POST', url: `/v1/referrals/${created.json().id}/shares`, payload: { agencyId: ngo.id } })
    statuses.push(share.statusCode)
    if (i % 2 === 0) statuses.push((await caseworker.request({ method: 'POST', url: `/v1/referrals/${created.json().id}/shares/${share.json().id}/accept` })).statusCode)
    else statuses.push((await referrer.request({ method: 'POST', url: `/v1/referrals/${created.json().id}/shares/${share.json().id}/withdraw` })).statusCode)
  }
  t.ok(statuses.every((s) => s >= 200 && s < 300), `the API answered 2xx throughout: ${statuses.join(',')}`)

  await redis.start()
  // 5 share.created + 2 share.withdrawn reach the webhook; the NGO inbox gets the same 7 emails;
  // the origin gets 3 share.accepted emails; in-app: 7 for the caseworker, 3 for the referrer.
  await waitFor(async () => receiver.received.length >= 7 && smtp.messages.length >= 10, 60_000, 'every notification after Redis is back')
  await new Promise((resolve) => setTimeout(resolve, 3000))
  const counts = byEventId(receiver.received)
  t.equal(counts.size, 7, 'seven webhook events')
  t.ok([...counts.values()].every((n) => n === 1), 'each delivered once')
  t.equal(smtp.messages.length, 10, 'ten emails, none twice')
  const caseworkerInbox = (await caseworker.request({ method: 'GET', url: '/v1/notifications?limit=200' })).json().items
  const referrerInbox = (await referrer.request({ method: 'GET', url: '/v1/notifications?limit=200' })).json().items
  t.equal(caseworkerInbox.length, 7)
  t.equal(referrerInbox.length, 3)
  for (const text of [...smtp.messages.map((m) => m.raw), ...receiver.received.map((r) => r.body), JSON.stringify(caseworkerInbox)]) {
    t.notOk(text.includes('Canary'), 'no personal data on any channel')
  }
})

t.test('a receiver that always fails, or hangs, backs off without slowing other agencies', async (t) => {
  const good = await startReceiver(t)
  const failing = await startReceiver(t, () => 500)
  const hanging = await startReceiver(t, () => 'hang')
  const { h, referrer, agencies: [goodAgency, failingAgency, hangingAgency] } = await deliveryScene(t, [good.url, failing.url, hanging.url])
  if (goodAgency === undefined || failingAgency === undefined || hangingAgency === undefined) throw new Error('no agencies')

  const started = Date.now()
  for (let i = 0; i < 6; i++) {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
    for (const agency of [hangingAgency, failingAgency, goodAgency]) {
      await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: agency.ngo.id } })
    }
  }
  await waitFor(async () => good.received.length >= 6, 20_000, 'the healthy agency\'s deliveries')
  const slowest = Math.max(...good.received.map((hook) => hook.at)) - started
  t.ok(slowest < 8_000, `the healthy agency got all 6 within ${slowest} ms, while the others failed or hung`)
  await waitFor(async () => failing.received.length >= 12, 20_000, 'retries to the failing receiver')
  const failingRows = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.webhookId, failingAgency.webhookId))
  t.ok(failingRows.every((row) => row.status === 'pending' && row.attempts >= 1 && row.lastError === 'HTTP 500'), 'failing deliveries wait for their next attempt')
  const gaps = failing.received.filter((hook) => hook.headers['haven-event-id'] === failing.received[0]?.headers['haven-event-id']).map((hook) => hook.at)
  t.ok(gaps.length >= 2 && (gaps[1] ?? 0) - (gaps[0] ?? 0) >= 400, 'with a backoff between attempts')
  t.ok(hanging.received.length >= 1, 'the hanging receiver was tried')
})

t.test('a receiver that always fails: its deliveries end as failed, its endpoint is switched off and its admins told once; the others go on', async (t) => {
  // Retry delays a hundredth of the service's: the 9 attempts of about 4 minutes take a few seconds.
  const good = await startReceiver(t)
  const failing = await startReceiver(t, () => 500)
  const { h, referrer, agencies: [goodAgency, failingAgency] } = await deliveryScene(t, [good.url, failing.url], { HAVEN_RETRY_DELAY_SCALE: '0.01' })
  if (goodAgency === undefined || failingAgency === undefined) throw new Error('no agencies')
  for (let i = 0; i < 6; i++) {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
    for (const agency of [failingAgency, goodAgency]) {
      await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: agency.ngo.id } })
    }
  }
  const rows = await waitFor(async () => {
    const found = await h.database.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.webhookId, failingAgency.webhookId))
    return found.length === 6 && found.every((row) => row.status === 'failed') ? found : undefined
  }, 30_000, 'the failing receiver\'s deliveries to end')
  const max = queueOf['webhook.deliver'].attempts
  t.ok(rows.filter((row) => row.attempts === max && row.lastError === 'HTTP 500').length >= maxConsecutiveFailures, `at least ${maxConsecutiveFailures} failed after all ${max} attempts`)
  t.ok(rows.every((row) => row.attempts === max || row.lastError === 'the endpoint is disabled or deleted'), 'the others ended when the endpoint was switched off')
  const posts = byEventId(failing.received)
  t.ok(rows.every((row) => (posts.get(row.eventId) ?? 0) === row.attempts), 'one POST an attempt, each counted')
  const hooks = (await failingAgency.admin.request({ method: 'GET', url: `/v1/agencies/${failingAgency.ngo.id}/webhooks` })).json().items
  t.same(hooks.map((hook: { status: string }) => hook.status), ['disabled'], 'the endpoint is switched off')
  const told = (await failingAgency.admin.request({ method: 'GET', url: '/v1/notifications' })).json().items
  t.same(told.map((n: { type: string }) => n.type), ['webhook.disabled'], 'its admin is told, once')
  await waitFor(async () => good.received.length >= 6 ? true : undefined, 10_000, 'the healthy agency\'s deliveries')
  t.same([...byEventId(good.received).values()], [1, 1, 1, 1, 1, 1], 'the healthy agency got each of its 6 once')
})

t.test('a receiver that hangs with a backlog holds only its share of the slots: another agency\'s deliveries go on', async (t) => {
  // 200 shares, one after another, to a receiver that never answers: first attempts as single jobs
  // and batches, then (after 10 s) their retries as single jobs, far beyond the 64 single slots. An
  // endpoint holds at most 16 single and 4 batch slots in a worker (jobs.ts); the rest of its jobs
  // are held back.
  const good = await startReceiver(t)
  const hanging = await startReceiver(t, () => 'hang')
  const { h, referrer, agencies: [goodAgency, hangingAgency] } = await deliveryScene(t, [good.url, hanging.url])
  if (goodAgency === undefined || hangingAgency === undefined) throw new Error('no agencies')
  const share = async (agencyId: string) => {
    const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
    const res = await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId } })
    if (res.statusCode !== 201) throw new Error(res.body)
  }
  for (let i = 0; i < 200; i++) await share(hangingAgency.ngo.id)
  const madeAt = Date.now()
  await waitFor(async () => hanging.received.length >= 16 ? true : undefined, 15_000, 'the hanging receiver\'s first deliveries')
  t.ok(hanging.received.length <= 16 + 4 * 16, `at most its share in flight to it: 16 single jobs and 4 batches of 16 (${hanging.received.length})`)
  /** 16 shares to the healthy agency at once (a batch, likely), then 3 one by one (single jobs); how long until all arrived. */
  const goodRound = async () => {
    const before = good.received.length
    const from = Date.now()
    await Promise.all(Array.from({ length: 16 }, async () => { await share(goodAgency.ngo.id) }))
    for (let i = 0; i < 3; i++) await share(goodAgency.ngo.id)
    await waitFor(async () => good.received.length >= before + 19 ? true : undefined, 20_000, 'the healthy agency\'s deliveries')
    return Math.max(...good.received.slice(before).map((hook) => hook.at)) - from
  }
  const whileFirstAttemptsHang = await goodRound()
  t.ok(whileFirstAttemptsHang < 3_000, `while its first attempts hang: the healthy agency's 19 within ${whileFirstAttemptsHang} ms`)
  // The first attempts end 10 s after they started, all before `madeAt`; their retries follow about a second later.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, madeAt + 13_000 - Date.now())))
  const whileRetriesHang = await goodRound()
  t.ok(whileRetriesHang < 3_000, `while its retries hang: the healthy agency's 19 within ${whileRetriesHang} ms`)
  const [spent] = await h.database.rows<{ most: number }>(sql`select max(attempts)::int as most from webhook_deliveries where webhook_id = ${hangingAgency.webhookId}`)
  t.ok((spent?.most ?? 0) <= 2, `a job held back spends no attempt: at most 2 attempts in ${Math.round((Date.now() - madeAt) / 1000)} s (${spent?.most})`)
  const ended = await h.database.rows<{ error: string | null }>(sql`select distinct last_error as error from webhook_deliveries where webhook_id = ${hangingAgency.webhookId} and attempts > 0`)
  t.same(ended.map((row) => row.error), ['no answer within 10 s'], 'each attempt ended by the 10 s timeout')
})

t.test('SIGTERM lets the delivery in flight finish, then the worker exits cleanly; metrics are served', async (t) => {
  const databaseUrl = await freshDatabaseUrl(t)
  const redis = await ownRedis(t)
  const receiver = await startReceiver(t, () => ({ status: 200, afterMs: 1500 }))
  const h = await buildHarness(t, { env: { DATABASE_URL: databaseUrl, REDIS_URL: redis.url, HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true' } })
  const metricsPort = await freePort()
  const worker = spawnWorker({ DATABASE_URL: databaseUrl, REDIS_URL: redis.url, HAVEN_METRICS_PORT: String(metricsPort) })
  t.teardown(() => { worker.kill('SIGKILL') })
  const police = await makeAgency(h, { kind: 'police' })
  const referrer = await signedIn(h, ['referrer'], police.id)
  const { ngo } = await agencyWithWebhook(h, receiver.url)
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  await referrer.request({ method: 'POST', url: `/v1/referrals/${referral.id}/shares`, payload: { agencyId: ngo.id } })
  await waitFor(async () => receiver.received.length > 0, 30_000, 'a delivery in flight')

  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
  for (const name of ['haven_queue_depth', 'haven_outbox_lag_seconds', 'haven_deliveries_total', 'haven_delivery_latency_seconds']) t.match(metrics, name)

  const code = await new Promise<number | null>((resolve) => {
    worker.once('exit', resolve)
    worker.kill('SIGTERM')
  })
  t.equal(code, 0, 'a clean exit on SIGTERM')
  const [row] = await h.database.db.select().from(webhookDeliveries)
  t.match(row, { status: 'delivered', attempts: 1 }, 'the delivery in flight finished before the exit')
  t.equal(receiver.received.length, 1)
})
