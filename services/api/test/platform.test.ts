import { spawn } from 'node:child_process'
import { Writable } from 'node:stream'
import { Validator } from '@seriousme/openapi-schema-validator'
import { sql } from '@haven/schema'
import postgres from 'postgres'
import t from 'tap'
import { loadConfig } from '../src/config.ts'
import { buildHarness, makeAgency, makeUser, password, referralBodies, signedIn } from './helper.ts'

t.test('liveness, readiness and docs', async (t) => {
  const h = await buildHarness(t)
  const live = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.equal(live.statusCode, 200)
  const ready = await h.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ok', database: 'up', redis: 'up' })

  const docs = await h.app.inject({ method: 'GET', url: '/docs/' })
  t.equal(docs.statusCode, 200)
  t.match(docs.headers['content-type'], /text\/html/)

  const spec = await h.app.inject({ method: 'GET', url: '/openapi.json' })
  t.equal(spec.statusCode, 200)
  const document = spec.json()
  t.equal(document.openapi, '3.1.0')
  const result = await new Validator().validate(document)
  t.ok(result.valid, `a valid OpenAPI 3.1 document ${JSON.stringify(result.errors ?? '').slice(0, 500)}`)
  for (const [path, method] of [
    ['/v1/auth/login', 'post'], ['/v1/auth/refresh', 'post'], ['/v1/auth/logout', 'post'], ['/v1/me', 'get'],
    ['/v1/agencies', 'post'], ['/v1/agencies', 'get'], ['/v1/agencies/{id}', 'get'], ['/v1/agencies/{id}', 'patch'],
    ['/v1/agencies/{id}/users', 'post'], ['/v1/agencies/{id}/users', 'get'], ['/v1/users/{id}', 'patch'],
    ['/healthz', 'get'], ['/readyz', 'get']
  ] as const) {
    t.ok(document.paths[path]?.[method], `${method.toUpperCase()} ${path} is documented`)
  }
})

t.test('readiness waits for a Redis connection that is being made instead of calling it down', async (t) => {
  const h = await buildHarness(t)
  h.redis.disconnect(true) // drops the connection and makes a new one
  const ready = await h.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ok', database: 'up', redis: 'up' })
})

t.test('readiness is 503 when Redis is down, and the API keeps serving', async (t) => {
  const h = await buildHarness(t, { env: { REDIS_URL: 'redis://127.0.0.1:1' } })
  const ready = await h.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { status: 'unavailable', database: 'up', redis: 'down' })
  const agency = await makeAgency(h)
  const user = await makeUser(h, agency.id, ['referrer'])
  const signIn = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password }, remoteAddress: h.ip })
  t.equal(signIn.statusCode, 200, 'sign-in still works')
})

t.test('request ids', async (t) => {
  const h = await buildHarness(t)
  const given = await h.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'trace-123.abc' } })
  t.equal(given.headers['x-request-id'], 'trace-123.abc', 'a caller\'s id is echoed')
  const generated = await h.app.inject({ method: 'GET', url: '/healthz' })
  t.match(generated.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  const forged = await h.app.inject({ method: 'GET', url: '/healthz', headers: { 'x-request-id': 'bad id\nwith newline' } })
  t.match(forged.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'an unsafe id is replaced')
  const problem = await h.app.inject({ method: 'GET', url: '/v1/me', headers: { 'x-request-id': 'trace-456' } })
  t.equal(problem.json().requestId, 'trace-456', 'errors carry the request id')
})

t.test('problem+json for what the client got wrong', async (t) => {
  const h = await buildHarness(t)
  const unknownRoute = await h.app.inject({ method: 'GET', url: '/v1/nothing-here' })
  t.equal(unknownRoute.statusCode, 404)
  t.match(unknownRoute.headers['content-type'], /application\/problem\+json/)
  t.same(Object.keys(unknownRoute.json()).sort(), ['detail', 'requestId', 'status', 'title', 'type'])

  const badPurpose = await h.app.inject({ method: 'GET', url: '/healthz', headers: { 'haven-purpose': 'curiosity' } })
  t.equal(badPurpose.statusCode, 400)
  t.same(badPurpose.json().errors.map((e: { path: string }) => e.path), ['/headers/haven-purpose'])
  const goodPurpose = await h.app.inject({ method: 'GET', url: '/healthz', headers: { 'haven-purpose': 'safeguarding_emergency' } })
  t.equal(goodPurpose.statusCode, 200)

  const malformed = await h.app.inject({ method: 'POST', url: '/v1/auth/login', headers: { 'content-type': 'application/json' }, payload: '{"email": ', remoteAddress: h.ip })
  t.equal(malformed.statusCode, 400)
  const wrongType = await h.app.inject({ method: 'POST', url: '/v1/auth/login', headers: { 'content-type': 'text/plain' }, payload: 'hello', remoteAddress: h.ip })
  t.equal(wrongType.statusCode, 415)
  const huge = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: 'a@example.org', password: 'x'.repeat(1024 * 1024 + 10) }, remoteAddress: h.ip })
  t.equal(huge.statusCode, 413)
  for (const res of [malformed, wrongType, huge]) {
    t.match(res.headers['content-type'], /application\/problem\+json/)
    t.notMatch(res.body, /at .*\.(ts|js):\d+/, 'no stack trace')
  }
})

t.test('security headers and the CORS allow-list', async (t) => {
  const h = await buildHarness(t, { env: { HAVEN_CORS_ORIGINS: 'https://app.example.org' } })
  const res = await h.app.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://app.example.org' } })
  t.equal(res.headers['x-content-type-options'], 'nosniff')
  t.ok(res.headers['strict-transport-security'])
  t.equal(res.headers['access-control-allow-origin'], 'https://app.example.org')
  const other = await h.app.inject({ method: 'GET', url: '/healthz', headers: { origin: 'https://evil.example' } })
  t.notOk(other.headers['access-control-allow-origin'], 'an origin off the list gets no CORS grant')
})

t.test('rate limits: per user when signed in, per address otherwise', async (t) => {
  t.test('per address', async (t) => {
    const h = await buildHarness(t, { env: { HAVEN_RATE_LIMIT_IP_PER_MIN: '3' } })
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await h.app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: { refreshToken: 'nope' }, remoteAddress: h.ip })
      statuses.push(res.statusCode)
      if (res.statusCode === 429) t.ok(Number(res.headers['retry-after']) > 0, 'Retry-After is set')
    }
    t.same(statuses, [401, 401, 401, 429])
  })
  t.test('per user', async (t) => {
    const h = await buildHarness(t, { env: { HAVEN_RATE_LIMIT_USER_PER_MIN: '3' } })
    const first = await signedIn(h, ['referrer'])
    const second = await signedIn(h, ['referrer'])
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) statuses.push((await first.request({ method: 'GET', url: '/v1/me' })).statusCode)
    t.same(statuses, [200, 200, 200, 429])
    t.equal((await second.request({ method: 'GET', url: '/v1/me' })).statusCode, 200, 'another user from the same address is not limited')
  })
})

t.test('logs carry no secrets or personal data', async (t) => {
  let logged = ''
  const logStream = new Writable({ write (chunk: Buffer, _encoding, done) { logged += chunk.toString(); done() } })
  const h = await buildHarness(t, { env: { LOG_LEVEL: 'info' }, logStream })
  const agency = await makeAgency(h)
  const user = await makeUser(h, agency.id, ['referrer'], { email: 'canary.logperson@example.org' })
  const signIn = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password }, remoteAddress: h.ip })
  const { accessToken, refreshToken } = signIn.json()
  await h.app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: `Bearer ${accessToken}` } })
  await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: 'canary-wrong-password' }, remoteAddress: h.ip })
  t.ok(logged.includes('request completed'), 'requests were logged')
  for (const secret of [password, 'canary-wrong-password', accessToken, refreshToken, 'canary.logperson']) {
    t.notOk(logged.includes(secret), 'a secret or personal value is absent from the log')
  }
})

t.test('the audit trail is append-only', async (t) => {
  const h = await buildHarness(t)
  await signedIn(h, ['referrer'])
  for (const statement of [sql`update audit_events set outcome = 'error'`, sql`delete from audit_events`, sql`truncate audit_events`]) {
    const error = await h.database.rows(statement).then(() => undefined, (e: Error & { cause?: Error }) => e)
    t.match(error?.cause?.message ?? error?.message, /append-only/, 'refused by the trigger')
  }
})

t.test('a transaction holds its connection, also when its BEGIN fills the pipeline (patched postgres.js)', async (t) => {
  // porsager/postgres#823, #1189: a BEGIN that filled a connection's pipeline skipped the hook that
  // reserves the connection; the transaction then failed with a TypeError thrown outside any
  // promise (the process went down) and the connection went back to the pool inside the open
  // transaction. patches/ has the fix; the second case guards the rule the fix must keep: the
  // pool never pipelines a query onto a connection a transaction holds.
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  for (const [name, fillPipeline] of [['a BEGIN behind a statement in flight, filling the pipeline', true], ['a BEGIN on an idle connection', false]] as const) {
    // max_pipeline is a connection option postgres.js's types do not list.
    const pipeline: object = fillPipeline ? { max_pipeline: 1 } : {}
    const client = postgres(url, { max: 1, onnotice: () => {}, ...pipeline })
    t.teardown(async () => { await client.end({ timeout: 5 }) })
    await client`select 1`
    const first = fillPipeline ? client`select pg_sleep(0.1)`.execute() : Promise.resolve()
    const inside = client.begin(async (tx) => (await tx`select txid_current()::text as xid, pg_sleep(0.1)`)[0]?.xid)
    // Sent while the transaction runs: it must wait for the connection, not join the transaction
    // (a transaction has one id: the same id would say it ran inside).
    const outside = client`select txid_current()::text as xid`.execute()
    await first
    const xid = await inside
    t.match(xid, /^\d+$/, `${name}: the transaction ran`)
    t.not((await outside)[0]?.xid, xid, `${name}: a query from outside ran in a transaction of its own`)
  }
})

t.test('configuration is checked once, at start', async (t) => {
  t.throws(() => loadConfig({ PORT: 'eighty', REDIS_URL: 'http://nope', HAVEN_RATE_LIMIT_USER_PER_MIN: '-1' }), /HAVEN_RATE_LIMIT_USER_PER_MIN/)
  try {
    loadConfig({ PORT: 'eighty', REDIS_URL: 'http://nope', NODE_ENV: 'production' })
  } catch (error) {
    const message = (error as Error).message
    for (const name of ['PORT', 'REDIS_URL', 'DATABASE_URL', 'HAVEN_JWT_PRIVATE_KEY', 'HAVEN_PUBLIC_URL']) t.match(message, name)
  }
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('..', import.meta.url).pathname,
    env: { PATH: process.env.PATH, PORT: 'not-a-port', NODE_ENV: 'test' },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => { child.on('close', resolve) })
  t.equal(code, 1, 'the process exits non-zero')
  t.match(stderr, /PORT must be a whole number/, 'naming the variable')
})

t.test('input PostgreSQL would choke on is a 400, never a 500', async (t) => {
  const h = await buildHarness(t)
  const admin = await signedIn(h, ['platform_admin'])
  const referrer = await signedIn(h, ['referrer'])
  const cursor = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url')
  const cases: [string, Parameters<typeof admin.request>[0], typeof admin][] = [
    ['urn:uuid: in a path', { method: 'GET', url: '/v1/agencies/urn:uuid:00000000-0000-0000-0000-000000000000' }, admin],
    ['NUL in a query string', { method: 'GET', url: '/v1/agencies?region=%00' }, admin],
    ['NUL in a body', { method: 'POST', url: '/v1/agencies', payload: { name: 'A\u0000', kind: 'ngo', region: 'R', contactEmail: 'a@example.org' } }, admin],
    ['year 0000 in a cursor', { method: 'GET', url: `/v1/agencies/${admin.agencyId}/users?cursor=${cursor(['0000-01-01T00:00:00.000Z', '00000000-0000-0000-0000-000000000000'])}` }, admin],
    // JavaScript's Date.parse takes these (30 February as 1 March); PostgreSQL refuses them.
    ['30 February in a cursor', { method: 'GET', url: `/v1/agencies/${admin.agencyId}/users?cursor=${cursor(['2024-02-30T00:00:00.000Z', '00000000-0000-0000-0000-000000000000'])}` }, admin],
    ['hour 24 in a cursor', { method: 'GET', url: `/v1/notifications?cursor=${cursor(['2024-02-01T24:00:00.000Z', '00000000-0000-0000-0000-000000000000'])}` }, admin],
    ['31 February', { method: 'POST', url: '/v1/referrals', payload: { ...referralBodies.consent(), consent: { ...referralBodies.consent().consent, recordedAt: '2026-02-31T10:00:00Z' } } }, referrer],
    ['year 0000 in a date-time', { method: 'POST', url: '/v1/referrals', payload: { ...referralBodies.consent(), consent: { ...referralBodies.consent().consent, recordedAt: '0000-01-01T10:00:00Z' } } }, referrer]
  ]
  // Sent as text: the test's own JSON.stringify would overflow on it.
  const nested = `{"subject":${'{"a":'.repeat(20_000)}{}${'}'.repeat(20_000)}}`
  const referral = (await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.child() })).json()
  cases.push(['a deeply nested patch', { method: 'PATCH', url: `/v1/referrals/${referral.id}`, headers: { 'if-match': '"1"', 'content-type': 'application/json' }, payload: nested }, referrer])
  for (const [name, options, caller] of cases) {
    const res = await caller.request(options)
    t.equal(res.statusCode, 400, name)
  }
})

t.test('UUIDs are accepted in upper case and answered in lower case, in paths and bodies', async (t) => {
  const h = await buildHarness(t)
  const police = await makeAgency(h, { kind: 'police' })
  const ngo = await makeAgency(h)
  const referrer = await signedIn(h, ['referrer'], police.id)
  const caseworker = await signedIn(h, ['caseworker'], ngo.id)
  const upper = (id: string) => id.toUpperCase()

  const created = await referrer.request({ method: 'POST', url: '/v1/referrals', payload: referralBodies.consent([upper(ngo.id)]) })
  t.equal(created.statusCode, 201, 'sharingAllowedWith in upper case names a known agency')
  const referral = created.json()
  t.same(referral.consent.sharingAllowedWith, [ngo.id], 'kept in lower case')

  const shared = await referrer.request({ method: 'POST', url: `/v1/referrals/${upper(referral.id)}/shares`, payload: { agencyId: upper(ngo.id) } })
  t.equal(shared.statusCode, 201, 'a share to an upper-case agency id is covered by the consent')
  const share = shared.json()
  t.equal(share.agencyId, ngo.id)

  const read = await caseworker.request({ method: 'GET', url: `/v1/referrals/${upper(referral.id)}` })
  t.equal(read.statusCode, 200)
  t.equal(read.json().id, referral.id)
  const accepted = await caseworker.request({ method: 'POST', url: `/v1/referrals/${upper(referral.id)}/shares/${upper(share.id)}/accept` })
  t.equal(accepted.statusCode, 200, 'a share id in upper case finds its share')
  t.equal(accepted.json().id, share.id)
  const note = await caseworker.request({ method: 'POST', url: `/v1/referrals/${upper(referral.id)}/notes`, payload: { body: 'Canary note', visibility: 'shared' } })
  t.equal(note.statusCode, 201)
  t.equal(note.json().referralId, referral.id)
  const timeline = await referrer.request({ method: 'GET', url: `/v1/referrals/${upper(referral.id)}/timeline` })
  t.equal(timeline.statusCode, 200)

  const patched = await referrer.request({
    method: 'PATCH', url: `/v1/referrals/${upper(referral.id)}`, headers: { 'if-match': '*' },
    payload: { consent: { sharingAllowedWith: [upper(ngo.id), upper(police.id)] } }
  })
  t.equal(patched.statusCode, 200, 'a patch naming agencies in upper case')
  t.same(patched.json().consent.sharingAllowedWith, [ngo.id, police.id])

  const events = await h.database.rows<{ referral_id: string }>(sql`select referral_id::text from audit_events where referral_id = ${referral.id}`)
  t.ok(events.length > 0 && events.every((event) => event.referral_id === referral.id), 'the trail names the referral by one id')
})

t.test('an unexpected error is logged without its message (a driver puts statement parameters there)', async (t) => {
  let logged = ''
  const logStream = new Writable({ write (chunk: Buffer, _encoding, done) { logged += chunk.toString(); done() } })
  const h = await buildHarness(t, { env: { LOG_LEVEL: 'info' }, logStream })
  h.app.get('/test-only/failing-query', async () => {
    throw Object.assign(new Error('Failed query: insert into referrals … params: Canary Testperson,1 Canary Street'), {
      params: ['Canary Testperson'], cause: Object.assign(new Error('invalid byte sequence'), { code: '22P05' })
    })
  })
  const res = await h.app.inject({ method: 'GET', url: '/test-only/failing-query' })
  t.equal(res.statusCode, 500)
  t.notMatch(res.body, /Canary|Failed query/, 'nor is it in the answer')
  t.match(logged, /unhandled error/)
  t.match(logged, /22P05/, 'its codes are logged')
  t.notOk(logged.includes('Canary'), 'its message and parameters are not')
})
