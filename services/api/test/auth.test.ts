import { auditEvents, refreshTokens } from '@haven/schema'
import { and, eq, like } from 'drizzle-orm'
import { createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto'
import { SignJWT } from 'jose'
import t from 'tap'
import { buildHarness, login, makeAgency, makeUser, password, signedIn, testConfig } from './helper.ts'

t.test('sign-in', async (t) => {
  const h = await buildHarness(t)
  const agency = await makeAgency(h)
  const user = await makeUser(h, agency.id, ['referrer'], { email: 'Mixed.Case@Example.org' })

  t.test('succeeds with the right password, whatever the email case, and is audited', async (t) => {
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: 'mixed.case@example.ORG', password }, remoteAddress: h.ip })
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.same(Object.keys(body).sort(), ['accessToken', 'expiresIn', 'refreshToken', 'tokenType'])
    t.equal(body.tokenType, 'Bearer')
    t.ok(body.expiresIn <= 900)
    const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login'), eq(auditEvents.targetId, user.id)))
    t.equal(events.length, 1)
    t.equal(events[0]?.actorUserId, user.id)
    t.equal(events[0]?.ip, h.ip)
  })

  t.test('gives the same 401 for an unknown email and a wrong password', async (t) => {
    const wrong = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: 'not the password' }, remoteAddress: h.ip })
    const unknown = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: 'nobody@example.org', password: 'not the password' }, remoteAddress: h.ip })
    t.equal(wrong.statusCode, 401)
    t.equal(unknown.statusCode, 401)
    t.equal(wrong.json().detail, unknown.json().detail)
    t.match(wrong.headers['content-type'], /application\/problem\+json/)
    const failed = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login_failed'), eq(auditEvents.ip, h.ip)))
    t.equal(failed.length, 2, 'both failures are audited')
    t.equal(failed.filter((e) => e.targetId === user.id).length, 1, 'the known account is the target of its failure')
  })

  t.test('refuses malformed bodies with the failing paths', async (t) => {
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: 3, extra: true }, remoteAddress: h.ip })
    t.equal(res.statusCode, 400)
    const paths = res.json().errors.map((e: { path: string }) => e.path).sort()
    t.same(paths, ['/body/email', '/body/extra', '/body/password'])
  })
})

t.test('sign-in throttling', async (t) => {
  t.test('per account: the sixth try in 15 minutes is 429 with Retry-After, even with the right password', async (t) => {
    const h = await buildHarness(t)
    const agency = await makeAgency(h)
    const user = await makeUser(h, agency.id, ['caseworker'])
    for (let i = 0; i < 5; i++) {
      // A different address each time: the account limit must hold on its own.
      const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password: 'wrong password!' }, remoteAddress: `10.250.0.${i + 1}` })
      t.equal(res.statusCode, 401)
    }
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password }, remoteAddress: '10.250.0.99' })
    t.equal(res.statusCode, 429)
    t.ok(Number(res.headers['retry-after']) > 0 && Number(res.headers['retry-after']) <= 900)
  })

  t.test('an email with no account is throttled exactly like an account, and the trail holds no email', async (t) => {
    const h = await buildHarness(t)
    const agency = await makeAgency(h)
    const user = await makeUser(h, agency.id, ['caseworker'])
    const nobody = `${randomUUID()}@example.org`
    const attempt = async (email: string, pw: string, i: number) => await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: pw }, remoteAddress: `192.0.2.${i + 1}` })
    for (let i = 0; i < 5; i++) {
      // The case and spacing of an email don't make it another sign-in name.
      t.equal((await attempt(i % 2 === 0 ? nobody : ` ${nobody.toUpperCase()}`, 'wrong password!', i)).statusCode, 401)
      t.equal((await attempt(user.email, 'wrong password!', i)).statusCode, 401)
    }
    const unknown = await attempt(nobody, 'wrong password!', 9)
    const known = await attempt(user.email, password, 9)
    t.equal(unknown.statusCode, 429)
    t.equal(known.statusCode, 429)
    t.equal(unknown.json().detail, known.json().detail)
    for (const res of [unknown, known]) t.ok(Number(res.headers['retry-after']) > 0 && Number(res.headers['retry-after']) <= 900)
    t.equal((await attempt(`other-${nobody}`, 'wrong password!', 9)).statusCode, 401, 'another unknown email is not locked')

    const failed = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login_failed'), like(auditEvents.ip, '192.0.2.%')))
    const unknownFailures = failed.filter((e) => e.targetType === 'unknown_account')
    t.equal(unknownFailures.length, 6, 'each failure of the unknown email is recorded')
    t.equal(new Set(unknownFailures.map((e) => e.targetId)).size, 2, 'under one keyed hash per normalised email')
    t.notOk(JSON.stringify(failed).toLowerCase().includes(nobody.split('@')[0] ?? nobody), 'no email in the audit rows')
  })

  t.test('20 wrong passwords at once: no more than the limit reach the password check', async (t) => {
    const h = await buildHarness(t)
    const agency = await makeAgency(h)
    const user = await makeUser(h, agency.id, ['caseworker'])
    for (const email of [user.email, `${randomUUID()}@example.org`]) {
      const answers = await Promise.all(Array.from({ length: 20 }, async (_, i) => await h.app.inject({
        method: 'POST', url: '/v1/auth/login', payload: { email, password: 'wrong password!' }, remoteAddress: `198.51.100.${i + 1}`
      })))
      const statuses = answers.map((res) => res.statusCode)
      t.equal(statuses.filter((s) => s === 401).length, 5, `${email === user.email ? 'an account' : 'an unknown email'}: exactly five are checked`)
      t.equal(statuses.filter((s) => s === 429).length, 15, 'the rest are throttled')
    }
    const failed = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login_failed'), eq(auditEvents.targetId, user.id)))
    t.equal(failed.length, 5, 'five failures recorded for the account')
  })

  t.test('per address: 20 failures from one address block it for every account', async (t) => {
    const h = await buildHarness(t)
    const agency = await makeAgency(h)
    const user = await makeUser(h, agency.id, ['caseworker'])
    for (let i = 0; i < 20; i++) {
      const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: `nobody${i}@example.org`, password: 'wrong password!' }, remoteAddress: h.ip })
      t.equal(res.statusCode, 401)
    }
    const blocked = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password }, remoteAddress: h.ip })
    t.equal(blocked.statusCode, 429)
    t.ok(Number(blocked.headers['retry-after']) > 0)
    const elsewhere = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: user.email, password }, remoteAddress: '10.251.0.1' })
    t.equal(elsewhere.statusCode, 200, 'the account itself is not locked')
  })
})

t.test('X-Forwarded-For moves the throttled address only when it comes from a trusted proxy', async (t) => {
  const attempts = async (h: Awaited<ReturnType<typeof buildHarness>>, remoteAddress: string, n: number, forwardedFor: (i: number) => string) => {
    const statuses: number[] = []
    for (let i = 0; i < n; i++) {
      const res = await h.app.inject({
        method: 'POST', url: '/v1/auth/login', payload: { email: `${randomUUID()}@example.org`, password: 'wrong password!' },
        remoteAddress, headers: { 'x-forwarded-for': forwardedFor(i) }
      })
      statuses.push(res.statusCode)
    }
    return statuses
  }

  t.test('not trusted (the default): a new spoofed address each time changes nothing', async (t) => {
    const h = await buildHarness(t)
    const statuses = await attempts(h, h.ip, 21, (i) => `203.0.113.${i + 1}`)
    t.same(statuses, [...Array(20).fill(401), 429], 'the 21st failure from one peer is throttled')
    const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login_failed'), eq(auditEvents.ip, h.ip)))
    t.equal(events.length, 20, 'the peer address is what is recorded')
  })

  t.test('trusted proxies by address: only their X-Forwarded-For counts', async (t) => {
    const proxy = '198.18.0.1'
    const h = await buildHarness(t, { env: { HAVEN_TRUST_PROXY: `${proxy}, 198.19.0.0/16` } })
    const direct = await attempts(h, h.ip, 21, (i) => `203.0.113.${i + 1}`)
    t.equal(direct.at(-1), 429, 'a client reaching the API directly cannot spoof its address')
    const client = '203.0.113.200'
    const viaProxy = await attempts(h, proxy, 21, (i) => `198.51.100.${i + 1}, ${client}`)
    t.same(viaProxy, [...Array(20).fill(401), 429], 'through the proxy, the client it saw is throttled, whatever the client prepends')
    const events = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.login_failed'), eq(auditEvents.ip, client)))
    t.equal(events.length, 20)
  })

  t.test('true and hop counts are refused at start, naming the variable', async (t) => {
    for (const value of ['true', '1', '10.0.0.0/33', 'proxy.example.org']) {
      t.throws(() => testConfig({ HAVEN_TRUST_PROXY: value }), /HAVEN_TRUST_PROXY/, value)
    }
    t.equal(testConfig({ HAVEN_TRUST_PROXY: 'false' }).trustProxy, false)
    t.same(testConfig({ HAVEN_TRUST_PROXY: 'loopback,::1,fd00::/8' }).trustProxy, ['loopback', '::1', 'fd00::/8'])
  })
})

t.test('refresh tokens', async (t) => {
  const h = await buildHarness(t)
  const agency = await makeAgency(h)
  const user = await makeUser(h, agency.id, ['referrer'])
  const refresh = async (token: string) => await h.app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: { refreshToken: token }, remoteAddress: h.ip })

  t.test('rotate on use; reuse of a spent one revokes the whole family', async (t) => {
    const first = await login(h, user.email)
    const second = await refresh(first.refreshToken)
    t.equal(second.statusCode, 200)
    const secondTokens = second.json()
    t.not(secondTokens.refreshToken, first.refreshToken)
    const me = await h.app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: `Bearer ${secondTokens.accessToken}` } })
    t.equal(me.statusCode, 200)

    const reuse = await refresh(first.refreshToken)
    t.equal(reuse.statusCode, 401, 'a spent token is refused')
    const afterReuse = await refresh(secondTokens.refreshToken)
    t.equal(afterReuse.statusCode, 401, 'its live successor was revoked with the family')
    const reuseEvents = await h.database.db.select().from(auditEvents).where(and(eq(auditEvents.action, 'auth.token_reuse'), eq(auditEvents.actorUserId, user.id)))
    t.equal(reuseEvents.length, 1)
  })

  t.test('tokens are stored hashed', async (t) => {
    const tokens = await login(h, user.email)
    const stored = await h.database.db.select().from(refreshTokens).where(eq(refreshTokens.userId, user.id))
    t.notOk(stored.some((row) => row.tokenHash === tokens.refreshToken))
  })

  t.test('an unknown token is 401; a malformed body is 400', async (t) => {
    t.equal((await refresh('not-a-token')).statusCode, 401)
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: {}, remoteAddress: h.ip })
    t.equal(res.statusCode, 400)
    t.same(res.json().errors.map((e: { path: string }) => e.path), ['/body/refreshToken'])
  })

  t.test('logout ends the session: its refresh token no longer works', async (t) => {
    const tokens = await login(h, user.email)
    const unauthenticated = await h.app.inject({ method: 'POST', url: '/v1/auth/logout', payload: { refreshToken: tokens.refreshToken } })
    t.equal(unauthenticated.statusCode, 401)
    const out = await h.app.inject({ method: 'POST', url: '/v1/auth/logout', payload: { refreshToken: tokens.refreshToken }, headers: { authorization: `Bearer ${tokens.accessToken}` } })
    t.equal(out.statusCode, 204)
    t.equal((await refresh(tokens.refreshToken)).statusCode, 401)
  })

  t.test('a suspended user cannot refresh', async (t) => {
    const other = await makeUser(h, agency.id, ['referrer'])
    const tokens = await login(h, other.email)
    const admin = await signedIn(h, ['platform_admin'])
    const res = await admin.request({ method: 'PATCH', url: `/v1/users/${other.id}`, payload: { status: 'suspended' } })
    t.equal(res.statusCode, 200)
    t.equal((await refresh(tokens.refreshToken)).statusCode, 401)
  })
})

t.test('access tokens: forged, expired and tampered ones get 401', async (t) => {
  const h = await buildHarness(t)
  const agency = await makeAgency(h)
  const user = await makeUser(h, agency.id, ['referrer'])
  const config = testConfig()
  const key = createPrivateKey(config.jwtPrivateKeyPem ?? '')
  const now = Math.floor(Date.now() / 1000)
  const claims = { sub: user.id }
  const valid = () => new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('haven').setAudience('haven-api').setIssuedAt(now)
  const me = async (token: string) => (await h.app.inject({ method: 'GET', url: '/v1/me', headers: { authorization: `Bearer ${token}` } })).statusCode

  t.equal(await me(await valid().setExpirationTime(now + 600).sign(key)), 200, 'a well-formed token signed with our key works')

  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const payload = { sub: user.id, iss: 'haven', aud: 'haven-api', iat: now, exp: now + 600 }
  t.equal(await me(`${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`), 401, 'alg: none')

  const publicPem = (await import('node:crypto')).createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString()
  const hs = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuer('haven').setAudience('haven-api').setExpirationTime(now + 600)
    .sign(new TextEncoder().encode(publicPem))
  t.equal(await me(hs), 401, 'HS256 keyed with our public key (algorithm confusion)')

  const otherKey = generateKeyPairSync('ed25519').privateKey
  t.equal(await me(await valid().setExpirationTime(now + 600).sign(otherKey)), 401, 'signed with another key')

  const es = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
  t.equal(await me(await new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).setIssuer('haven').setAudience('haven-api').setExpirationTime(now + 600).sign(es)), 401, 'another algorithm')

  t.equal(await me(await valid().setExpirationTime(now - 10).sign(key)), 401, 'expired')
  t.equal(await me(await valid().sign(key)), 401, 'no exp at all')
  t.equal(await me(await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('someone-else').setAudience('haven-api').setExpirationTime(now + 600).sign(key)), 401, 'wrong issuer')
  t.equal(await me(await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA' }).setIssuer('haven').setAudience('other-api').setExpirationTime(now + 600).sign(key)), 401, 'wrong audience')

  const good = await valid().setExpirationTime(now + 600).sign(key)
  const [header, , signature] = good.split('.')
  const other = await makeUser(h, agency.id, ['platform_admin'])
  t.equal(await me(`${header}.${b64({ ...payload, sub: other.id })}.${signature}`), 401, 'tampered claims')
  t.equal(await me('garbage'), 401, 'not a JWT')
  t.equal((await h.app.inject({ method: 'GET', url: '/v1/me' })).statusCode, 401, 'no token')
})

t.test('suspension takes effect on the very next request', async (t) => {
  const h = await buildHarness(t)
  const admin = await signedIn(h, ['platform_admin'])

  t.test('of a user', async (t) => {
    const caseworker = await signedIn(h, ['caseworker'])
    t.equal((await caseworker.request({ method: 'GET', url: '/v1/me' })).statusCode, 200)
    t.equal((await admin.request({ method: 'PATCH', url: `/v1/users/${caseworker.user.id}`, payload: { status: 'suspended' } })).statusCode, 200)
    t.equal((await caseworker.request({ method: 'GET', url: '/v1/me' })).statusCode, 401)
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: caseworker.user.email, password }, remoteAddress: h.ip })
    t.equal(res.statusCode, 401, 'nor can it sign in again')
    t.equal((await admin.request({ method: 'PATCH', url: `/v1/users/${caseworker.user.id}`, payload: { status: 'active' } })).statusCode, 200)
    t.equal((await caseworker.request({ method: 'GET', url: '/v1/me' })).statusCode, 200, 'reinstated')
  })

  t.test('of an agency', async (t) => {
    const referrer = await signedIn(h, ['referrer'])
    t.equal((await admin.request({ method: 'PATCH', url: `/v1/agencies/${referrer.agencyId}`, payload: { status: 'suspended' } })).statusCode, 200)
    t.equal((await referrer.request({ method: 'GET', url: '/v1/me' })).statusCode, 401)
    const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email: referrer.user.email, password }, remoteAddress: h.ip })
    t.equal(res.statusCode, 401)
  })
})

t.test('GET /v1/me', async (t) => {
  const h = await buildHarness(t)
  const referrer = await signedIn(h, ['referrer', 'caseworker'])
  const res = await referrer.request({ method: 'GET', url: '/v1/me' })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['agency', 'email', 'id', 'name', 'roles'])
  t.same(Object.keys(body.agency).sort(), ['id', 'kind', 'name'])
  t.equal(body.agency.id, referrer.agencyId)
  t.same(body.roles, ['referrer', 'caseworker'])
})
