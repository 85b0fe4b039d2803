/**
 * An agency's users, as the contract states them (DESIGN.md section 2): who may add, list and edit
 * them, the shape of every answer (never a password or its hash), every refusal, and the audit
 * event each change or refused attempt leaves behind.
 */
import { type AuditAction, auditEvents, type AuditOutcome, type AuditTargetType, type User, users } from '@haven/schema'
import { eq, sql } from 'drizzle-orm'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildHarness, freshDatabaseUrl, type Harness, login, makeAgency, makeUser, signedIn, unique } from './helper.ts'

type SignedIn = Awaited<ReturnType<typeof signedIn>>
type Page = { items: User[], nextCursor: string | null }

const userKeys = ['agencyId', 'createdAt', 'email', 'id', 'name', 'roles', 'status', 'updatedAt']
const unknownId = '00000000-0000-4000-8000-000000000000'
const oneMiB = 1024 * 1024
/** Users' ids in the list's order: oldest first, by id between two made in the same millisecond (created_at's precision). */
const oldestFirst = (rows: { id: string, createdAt: Date }[]) => [...rows].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1)).map((u) => u.id)
const newPassword = 'a long and private passphrase'

const newUser = (fields: Partial<{ email: string, roles: string[], password: string }> = {}) => ({
  email: `${unique('new.person')}@example.org`,
  name: 'New Person',
  roles: ['caseworker'],
  password: newPassword,
  ...fields
})

/** Nothing secret in any answer: no password, however the request went, and no hash. */
function carriesNoSecret (t: Test, res: LightMyRequestResponse) {
  t.notMatch(res.body, /passwordHash|password_hash|\$argon2|"password"\s*:/, 'no password field or hash')
  t.notOk(res.body.includes(newPassword), 'the password sent is not echoed')
}

function isProblem (t: Test, res: LightMyRequestResponse, status: number) {
  t.equal(res.statusCode, status, `answers ${status}`)
  t.match(res.headers['content-type'], /^application\/problem\+json/)
  t.has(res.json(), { status, requestId: res.headers['x-request-id'] })
  t.notMatch(res.body, /\bat .+\.ts:\d+|select |insert |update .+ set /i, 'no stack trace or SQL')
  carriesNoSecret(t, res)
}

/** A 400 that names exactly these paths in `errors[]`. */
function isInvalid (t: Test, res: LightMyRequestResponse, paths: string[]) {
  isProblem(t, res, 400)
  const named = [...new Set((res.json().errors ?? []).map((e: { path: string }) => e.path))].sort()
  t.same(named, [...paths].sort(), `names ${paths.join(', ')}`)
}

function isUser (t: Test, res: LightMyRequestResponse, status: number): User {
  t.equal(res.statusCode, status, `answers ${status}`)
  const body = res.json<User>()
  t.same(Object.keys(body).sort(), userKeys, 'exactly the User fields')
  carriesNoSecret(t, res)
  return body
}

function isPage (t: Test, res: LightMyRequestResponse): Page {
  t.equal(res.statusCode, 200, 'answers 200')
  const page = res.json<Page>()
  t.same(Object.keys(page).sort(), ['items', 'nextCursor'])
  for (const item of page.items) t.same(Object.keys(item).sort(), userKeys, 'each item has exactly the User fields')
  carriesNoSecret(t, res)
  return page
}

const auditOf = async (h: Harness, res: LightMyRequestResponse) =>
  await h.database.db.select().from(auditEvents).where(eq(auditEvents.requestId, String(res.headers['x-request-id'])))

/** The request left exactly one audit event, with this action and outcome, by this caller, on this target. */
async function isAudited (t: Test, h: Harness, res: LightMyRequestResponse, action: AuditAction, outcome: AuditOutcome, actor: SignedIn, target: { type: AuditTargetType, id: string }) {
  const events = await auditOf(h, res)
  t.equal(events.length, 1, `one audit event for ${action}`)
  t.has(events[0], { action, outcome, actorUserId: actor.user.id, actorAgencyId: actor.agencyId, ip: h.ip, targetType: target.type, targetId: target.id })
  t.same(events[0]?.actorRoles, actor.user.roles)
}

const userRow = async (h: Harness, id: string) => (await h.database.db.select().from(users).where(eq(users.id, id)))[0]
const usersWithEmail = async (h: Harness, email: string) =>
  (await h.database.db.select({ n: sql<number>`count(*)::int` }).from(users).where(sql`lower(${users.email}) = lower(${email})`))[0]?.n
const usersOf = async (h: Harness, agencyId: string) =>
  (await h.database.db.select({ n: sql<number>`count(*)::int` }).from(users).where(eq(users.agencyId, agencyId)))[0]?.n

/** Callers whose roles never allow managing users; those with an agency belong to `agencyId`. */
async function nonAdmins (h: Harness, agencyId: string) {
  return [
    { who: 'a referrer', caller: await signedIn(h, ['referrer'], agencyId) },
    { who: 'a caseworker', caller: await signedIn(h, ['caseworker'], agencyId) },
    { who: 'an auditor', caller: await signedIn(h, ['auditor'], agencyId) },
    { who: 'a platform auditor', caller: await signedIn(h, ['platform_auditor']) }
  ]
}

/** Bodies the transport refuses before any schema runs. */
function transportRefusals (t: Test, send: (options: Omit<InjectOptions, 'method' | 'url'>) => Promise<LightMyRequestResponse>, body: object, unchanged: (t: Test) => Promise<void>) {
  t.test('400 for malformed JSON', async (t) => {
    isProblem(t, await send({ headers: { 'content-type': 'application/json' }, payload: `{"name": "Ann", "password": "${newPassword}"` }), 400)
    isProblem(t, await send({ headers: { 'content-type': 'application/json' }, payload: '' }), 400)
    await unchanged(t)
  })

  t.test('415 for a body that is not JSON', async (t) => {
    isProblem(t, await send({ headers: { 'content-type': 'text/plain' }, payload: JSON.stringify(body) }), 415)
    isProblem(t, await send({ headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: 'name=Ann' }), 415)
    await unchanged(t)
  })

  t.test('413 for a body over 1 MiB', async (t) => {
    isProblem(t, await send({ headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ ...body, name: 'x'.repeat(oneMiB) }) }), 413)
    await unchanged(t)
  })
}

t.test('POST /v1/agencies/:id/users', async (t) => {
  const h = await buildHarness(t)
  const platformAdmin = await signedIn(h, ['platform_admin'])
  const agency = await makeAgency(h)
  const create = async (caller: SignedIn, agencyId: string, payload: unknown) =>
    await caller.request({ method: 'POST', url: `/v1/agencies/${agencyId}/users`, payload: payload as object })

  t.test('a platform admin adds a user to any agency; the password is stored hashed and works', async (t) => {
    const input = newUser({ roles: ['referrer', 'caseworker'] })
    const res = await create(platformAdmin, agency.id, input)
    const user = isUser(t, res, 201)
    t.has(user, { agencyId: agency.id, name: input.name, roles: input.roles, status: 'active' })
    t.equal(user.email.toLowerCase(), input.email.toLowerCase())
    t.equal(new Date(user.createdAt).toISOString(), user.createdAt, 'createdAt is ISO 8601 in UTC')
    const row = await userRow(h, user.id)
    t.not(row?.passwordHash, input.password, 'the password is not stored as given')
    t.ok((await login(h, input.email, input.password)).accessToken, 'the new user signs in with it')
    await isAudited(t, h, res, 'user.create', 'success', platformAdmin, { type: 'user', id: user.id })
  })

  t.test('a platform admin may grant platform roles', async (t) => {
    const user = isUser(t, await create(platformAdmin, agency.id, newUser({ roles: ['platform_auditor'] })), 201)
    t.same(user.roles, ['platform_auditor'])
  })

  t.test('an agency admin adds a user to its own agency; 12 characters is password enough', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const res = await create(admin, admin.agencyId, newUser({ roles: ['auditor'], password: 'twelve chars' }))
    const user = isUser(t, res, 201)
    t.has(user, { agencyId: admin.agencyId, roles: ['auditor'] })
    await isAudited(t, h, res, 'user.create', 'success', admin, { type: 'user', id: user.id })
  })

  t.test('409 for an email already in use, whatever its case and agency', async (t) => {
    const local = unique('Ann.Example')
    const first = await create(platformAdmin, agency.id, newUser({ email: `${local}@example.org` }))
    isUser(t, first, 201)
    const other = await makeAgency(h)
    for (const [agencyId, email] of [[agency.id, `${local.toLowerCase()}@EXAMPLE.org`], [other.id, `${local.toUpperCase()}@example.org`]] as const) {
      const res = await create(platformAdmin, agencyId, newUser({ email }))
      isProblem(t, res, 409)
      t.notOk((await auditOf(h, res)).some((e) => e.outcome === 'success'), 'no success is recorded')
    }
    t.equal(await usersWithEmail(h, `${local}@example.org`), 1, 'still one user with that email')
    t.equal(await usersOf(h, other.id), 0)
  })

  t.test('401 without a token', async (t) => {
    const input = newUser()
    isProblem(t, await h.app.inject({ method: 'POST', url: `/v1/agencies/${agency.id}/users`, payload: input }), 401)
    t.equal(await usersWithEmail(h, input.email), 0)
  })

  t.test('403 for roles that may not add users here, audited, nothing created', async (t) => {
    const callers = [...await nonAdmins(h, agency.id), { who: 'an agency admin of another agency', caller: await signedIn(h, ['agency_admin']) }]
    for (const { who, caller } of callers) {
      t.test(who, async (t) => {
        const input = newUser()
        const res = await create(caller, agency.id, input)
        isProblem(t, res, 403)
        await isAudited(t, h, res, 'user.create', 'denied', caller, { type: 'agency', id: agency.id })
        t.equal(await usersWithEmail(h, input.email), 0)
      })
    }
  })

  t.test('403 for an agency admin granting a platform role, audited, nothing created', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    for (const roles of [['platform_admin'], ['platform_auditor'], ['caseworker', 'platform_admin']]) {
      const input = newUser({ roles })
      const res = await create(admin, admin.agencyId, input)
      isProblem(t, res, 403)
      await isAudited(t, h, res, 'user.create', 'denied', admin, { type: 'agency', id: admin.agencyId })
      t.equal(await usersWithEmail(h, input.email), 0, `${roles.join(', ')}: nothing created`)
    }
  })

  t.test('404 for an unknown agency', async (t) => {
    const input = newUser()
    isProblem(t, await create(platformAdmin, unknownId, input), 404)
    t.equal(await usersWithEmail(h, input.email), 0)
  })

  t.test('400 naming each failing path; nothing created', async (t) => {
    const cases: [string, ReturnType<typeof newUser> & Record<string, unknown>, string[]][] = [
      ['an unknown property', { ...newUser(), status: 'active' }, ['/body/status']],
      ['a number for the name', { ...newUser(), name: 3 as unknown as string }, ['/body/name']],
      ['a blank name', { ...newUser(), name: ' ' }, ['/body/name']],
      ['a bad email', { ...newUser(), email: `${unique('no-at-sign')}.example.org` }, ['/body/email']],
      ['an email over 254 characters', { ...newUser(), email: `${'a'.repeat(64)}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(63)}.org` }, ['/body/email']],
      ['a role outside the list', { ...newUser(), roles: ['caseworker', 'superuser'] }, ['/body/roles/1']],
      ['no roles', { ...newUser(), roles: [] }, ['/body/roles']],
      ['a repeated role', { ...newUser(), roles: ['referrer', 'referrer'] }, ['/body/roles']],
      ['a password of 11 characters', { ...newUser(), password: 'eleven char' }, ['/body/password']],
      ['several faults at once', { ...newUser(), name: 3 as unknown as string, roles: ['root'], password: 'short', agencyId: unknownId }, ['/body/name', '/body/roles/0', '/body/password', '/body/agencyId']]
    ]
    for (const [what, payload, paths] of cases) {
      t.test(what, async (t) => {
        isInvalid(t, await create(platformAdmin, agency.id, payload), paths)
        t.equal(await usersWithEmail(h, payload.email), 0)
      })
    }
    t.test('missing fields', async (t) => {
      isInvalid(t, await create(platformAdmin, agency.id, { name: 'Nobody' }), ['/body/email', '/body/roles', '/body/password'])
    })
  })

  t.test('400 for an agency id that is not a UUID', async (t) => {
    const input = newUser()
    isInvalid(t, await create(platformAdmin, 'agency-1', input), ['/params/id'])
    t.equal(await usersWithEmail(h, input.email), 0)
  })

  t.test('transport refusals', async (t) => {
    const target = await makeAgency(h)
    transportRefusals(t, async (options) => await platformAdmin.request({ method: 'POST', url: `/v1/agencies/${target.id}/users`, ...options }),
      newUser(), async (t) => { t.equal(await usersOf(h, target.id), 0, 'nothing created') })
  })
})

t.test('GET /v1/agencies/:id/users', async (t) => {
  const h = await buildHarness(t)
  const platformAdmin = await signedIn(h, ['platform_admin'])
  const list = async (caller: SignedIn, agencyId: string, query = '') =>
    await caller.request({ method: 'GET', url: `/v1/agencies/${agencyId}/users${query}` })

  t.test('a platform admin lists any agency\'s users, oldest first, and only theirs', async (t) => {
    const agency = await makeAgency(h)
    const members = [await makeUser(h, agency.id, ['referrer']), await makeUser(h, agency.id, ['caseworker', 'auditor'])]
    await makeUser(h, (await makeAgency(h)).id, ['referrer'])
    const page = isPage(t, await list(platformAdmin, agency.id))
    t.same(page.items.map((u) => u.id), oldestFirst(members))
    t.equal(page.nextCursor, null)
    t.same(page.items.find((u) => u.id === members[1]?.id), {
      id: members[1]?.id, agencyId: agency.id, email: members[1]?.email, name: members[1]?.name, roles: ['caseworker', 'auditor'],
      status: 'active', createdAt: members[1]?.createdAt.toISOString(), updatedAt: members[1]?.updatedAt.toISOString()
    })
  })

  t.test('an agency admin lists its own agency\'s users, itself included', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const colleague = await makeUser(h, admin.agencyId, ['caseworker'])
    const page = isPage(t, await list(admin, admin.agencyId))
    t.same(page.items.map((u) => u.id), [admin.user.id, colleague.id])
  })

  t.test('keyset pagination: pages are stable while users are being added', async (t) => {
    const agency = await makeAgency(h)
    const originals = []
    for (let i = 0; i < 7; i++) originals.push(await makeUser(h, agency.id, ['caseworker']))
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page = isPage(t, await list(platformAdmin, agency.id, `?limit=2${cursor !== null ? `&cursor=${cursor}` : ''}`))
      t.ok(page.items.length <= 2, 'no page is longer than the limit')
      seen.push(...page.items.map((u) => u.id))
      cursor = page.nextCursor
      if (pages < 3) isUser(t, await platformAdmin.request({ method: 'POST', url: `/v1/agencies/${agency.id}/users`, payload: newUser() }), 201)
      pages++
    } while (cursor !== null && pages < 20)
    t.equal(cursor, null, 'the last page says so')
    t.equal(new Set(seen).size, seen.length, 'no user appears twice')
    const originalIds = oldestFirst(originals)
    t.same(seen.filter((id) => originalIds.includes(id)), originalIds, 'every original user appears, oldest first')
  })

  t.test('401 without a token', async (t) => {
    const agency = await makeAgency(h)
    isProblem(t, await h.app.inject({ method: 'GET', url: `/v1/agencies/${agency.id}/users` }), 401)
  })

  t.test('403 for roles that may not list users here', async (t) => {
    const agency = await makeAgency(h)
    const callers = [...await nonAdmins(h, agency.id), { who: 'an agency admin of another agency', caller: await signedIn(h, ['agency_admin']) }]
    for (const { who, caller } of callers) {
      t.test(who, async (t) => {
        const res = await list(caller, agency.id)
        isProblem(t, res, 403)
        const events = await auditOf(h, res)
        t.equal(events.filter((e) => e.outcome === 'denied' && e.action === 'user.list' && e.actorUserId === caller.user.id).length, 1, 'the refusal is audited as denied')
      })
    }
  })

  t.test('404 for an unknown agency; 400 for an id that is not a UUID', async (t) => {
    isProblem(t, await list(platformAdmin, unknownId), 404)
    isInvalid(t, await list(platformAdmin, 'agency-1'), ['/params/id'])
  })

  t.test('400 for a bad limit or an unknown parameter', async (t) => {
    const agency = await makeAgency(h)
    isInvalid(t, await list(platformAdmin, agency.id, '?limit=0'), ['/querystring/limit'])
    isInvalid(t, await list(platformAdmin, agency.id, '?limit=201'), ['/querystring/limit'])
    isInvalid(t, await list(platformAdmin, agency.id, '?role=referrer'), ['/querystring/role'])
  })

  t.test('400 for an invalid cursor', async (t) => {
    const agency = await makeAgency(h)
    const forged = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url')
    for (const cursor of ['not-a-cursor', forged(['2026-01-01T00:00:00.000Z']), forged(['yesterday', unknownId]), forged(['2026-01-01T00:00:00.000Z', 'x'])]) {
      isProblem(t, await list(platformAdmin, agency.id, `?cursor=${cursor}`), 400)
    }
    for (const time of ['x 1', '-271821-04-20T00:00:00.000Z']) {
      const res = await list(platformAdmin, agency.id, `?cursor=${forged([time, unknownId])}`)
      t.equal(res.statusCode, 400, `a cursor whose time is ${JSON.stringify(time)} is refused, not sent to the database`)
    }
  })
})

t.test('PATCH /v1/users/:id', async (t) => {
  const h = await buildHarness(t)
  const platformAdmin = await signedIn(h, ['platform_admin'])
  const patch = async (caller: SignedIn, id: string, payload: unknown) =>
    await caller.request({ method: 'PATCH', url: `/v1/users/${id}`, payload: payload as object })

  /** A fresh user of `agencyId` that `refused` must leave exactly as it was. */
  const unchangedBy = async (t: Test, agencyId: string, roles: Parameters<typeof makeUser>[2], refused: (userId: string) => Promise<void>) => {
    const user = await makeUser(h, agencyId, roles)
    await refused(user.id)
    t.same(await userRow(h, user.id), user, 'the user is unchanged')
  }

  t.test('a platform admin renames, re-roles, suspends and reinstates any user', async (t) => {
    const user = await makeUser(h, (await makeAgency(h)).id, ['referrer'])
    const res = await patch(platformAdmin, user.id, { name: 'Renamed Person', roles: ['caseworker', 'agency_admin'], status: 'suspended' })
    const body = isUser(t, res, 200)
    t.has(body, { id: user.id, agencyId: user.agencyId, email: user.email, name: 'Renamed Person', roles: ['caseworker', 'agency_admin'], status: 'suspended', createdAt: user.createdAt.toISOString() })
    t.ok(body.updatedAt >= user.updatedAt.toISOString(), 'updatedAt moves forward')
    t.has(await userRow(h, user.id), { name: 'Renamed Person', status: 'suspended', passwordHash: user.passwordHash })
    await isAudited(t, h, res, 'user.update', 'success', platformAdmin, { type: 'user', id: user.id })

    const reinstated = isUser(t, await patch(platformAdmin, user.id, { status: 'active' }), 200)
    t.has(reinstated, { status: 'active', name: 'Renamed Person' }, 'fields not sent are kept')
  })

  t.test('a platform admin may grant platform roles', async (t) => {
    const user = await makeUser(h, (await makeAgency(h)).id, ['caseworker'])
    t.same(isUser(t, await patch(platformAdmin, user.id, { roles: ['platform_auditor'] }), 200).roles, ['platform_auditor'])
  })

  t.test('an agency admin edits its own agency\'s users', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const user = await makeUser(h, admin.agencyId, ['referrer'])
    const res = await patch(admin, user.id, { name: 'Team Lead', roles: ['referrer', 'agency_admin'] })
    t.has(isUser(t, res, 200), { name: 'Team Lead', roles: ['referrer', 'agency_admin'] })
    await isAudited(t, h, res, 'user.update', 'success', admin, { type: 'user', id: user.id })
  })

  t.test('suspension takes effect on the user\'s very next request', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const caseworker = await signedIn(h, ['caseworker'], admin.agencyId)
    t.equal((await caseworker.request({ method: 'GET', url: '/v1/me' })).statusCode, 200)
    isUser(t, await patch(admin, caseworker.user.id, { status: 'suspended' }), 200)
    t.equal((await caseworker.request({ method: 'GET', url: '/v1/me' })).statusCode, 401)
  })

  // 409 for the last active platform admin is tested below on a database of its own: other test
  // files create platform admins in this one, so "the last one" can't be arranged here.

  t.test('401 without a token', async (t) => {
    await unchangedBy(t, (await makeAgency(h)).id, ['referrer'], async (id) => {
      isProblem(t, await h.app.inject({ method: 'PATCH', url: `/v1/users/${id}`, payload: { name: 'x' } }), 401)
    })
  })

  t.test('403 for roles that never manage users, audited, nothing changed', async (t) => {
    const agency = await makeAgency(h)
    for (const { who, caller } of await nonAdmins(h, agency.id)) {
      t.test(who, async (t) => {
        await unchangedBy(t, agency.id, ['referrer'], async (id) => {
          const res = await patch(caller, id, { status: 'suspended' })
          isProblem(t, res, 403)
          await isAudited(t, h, res, 'user.update', 'denied', caller, { type: 'user', id })
        })
      })
    }
  })

  t.test('404 for a user of another agency when the caller is an agency admin, audited, nothing changed', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    await unchangedBy(t, (await makeAgency(h)).id, ['caseworker'], async (id) => {
      const res = await patch(admin, id, { status: 'suspended' })
      isProblem(t, res, 404)
      await isAudited(t, h, res, 'user.update', 'denied', admin, { type: 'user', id })
      const unknown = await patch(admin, unknownId, { status: 'suspended' })
      t.equal(unknown.json().detail, res.json().detail, 'the same answer as for an id that does not exist')
    })
  })

  t.test('403 for an agency admin granting a platform role, audited, nothing changed', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    for (const roles of [['platform_admin'], ['platform_auditor'], ['caseworker', 'platform_auditor']]) {
      t.test(roles.join(', '), async (t) => {
        await unchangedBy(t, admin.agencyId, ['caseworker'], async (id) => {
          const res = await patch(admin, id, { roles })
          isProblem(t, res, 403)
          await isAudited(t, h, res, 'user.update', 'denied', admin, { type: 'user', id })
        })
      })
    }
  })

  t.test('403 for an agency admin editing a user who holds a platform role, audited, nothing changed', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    for (const [roles, payload] of [[['platform_admin'], { status: 'suspended' }], [['platform_auditor', 'auditor'], { roles: ['auditor'] }], [['platform_auditor'], { name: 'Renamed' }]] as const) {
      t.test(`${roles.join(', ')}: ${Object.keys(payload).join(', ')}`, async (t) => {
        await unchangedBy(t, admin.agencyId, [...roles], async (id) => {
          const res = await patch(admin, id, payload)
          isProblem(t, res, 403)
          await isAudited(t, h, res, 'user.update', 'denied', admin, { type: 'user', id })
        })
      })
    }
  })

  t.test('404 for an unknown user', async (t) => {
    const res = await patch(platformAdmin, unknownId, { name: 'Ghost' })
    isProblem(t, res, 404)
    t.notOk((await auditOf(h, res)).some((e) => e.outcome === 'success'), 'no success is recorded')
  })

  t.test('400 naming each failing path; nothing changed', async (t) => {
    const agency = await makeAgency(h)
    const cases: [string, unknown, string[]][] = [
      ['an empty patch', {}, ['/body']],
      ['an email (not editable)', { email: `${unique('moved')}@example.org` }, ['/body/email']],
      ['a password (not editable here)', { password: newPassword }, ['/body/password']],
      ['a number for the name', { name: 3 }, ['/body/name']],
      ['a blank name', { name: '' }, ['/body/name']],
      ['a status outside the list', { status: 'deleted' }, ['/body/status']],
      ['a role outside the list', { roles: ['superuser'] }, ['/body/roles/0']],
      ['no roles', { roles: [] }, ['/body/roles']],
      ['several faults at once', { name: 3, status: 'gone', agencyId: unknownId }, ['/body/name', '/body/status', '/body/agencyId']]
    ]
    for (const [what, payload, paths] of cases) {
      t.test(what, async (t) => {
        await unchangedBy(t, agency.id, ['referrer'], async (id) => { isInvalid(t, await patch(platformAdmin, id, payload), paths) })
      })
    }
  })

  t.test('400 for an id that is not a UUID', async (t) => {
    isInvalid(t, await patch(platformAdmin, '12345', { name: 'x' }), ['/params/id'])
  })

  t.test('transport refusals', async (t) => {
    const user = await makeUser(h, (await makeAgency(h)).id, ['referrer'])
    transportRefusals(t, async (options) => await platformAdmin.request({ method: 'PATCH', url: `/v1/users/${user.id}`, ...options }),
      { name: 'Too Late' }, async (t) => { t.same(await userRow(h, user.id), user, 'the user is unchanged') })
  })
})

t.test('an agency admin cannot change its own roles (it would hand itself case content)', async (t) => {
  const h = await buildHarness(t)
  const admin = await signedIn(h, ['agency_admin'])
  const res = await admin.request({ method: 'PATCH', url: `/v1/users/${admin.user.id}`, payload: { roles: ['agency_admin', 'caseworker'] } })
  t.equal(res.statusCode, 403)
  t.equal((await admin.request({ method: 'GET', url: '/v1/referrals' })).statusCode, 403, 'still no case content')
  t.equal((await admin.request({ method: 'PATCH', url: `/v1/users/${admin.user.id}`, payload: { name: 'Renamed Admin' } })).statusCode, 200, 'its name it may change')
})

t.test('the last active platform admin stays, even when two admins remove each other at once', async (t) => {
  const h = await buildHarness(t, { env: { DATABASE_URL: await freshDatabaseUrl(t) } })
  const activeAdmins = async () => (await h.database.db.select().from(users))
    .filter((u) => u.status === 'active' && u.roles.includes('platform_admin')).map((u) => u.id)
  const race = async (changes: Array<[SignedIn, SignedIn, object]>) => await Promise.all(changes.map(async ([by, of, body]) =>
    await by.request({ method: 'PATCH', url: `/v1/users/${of.user.id}`, payload: body })))

  for (const [what, first, second] of [
    ['suspend each other', { status: 'suspended' }, { status: 'suspended' }],
    ['demote each other', { roles: ['caseworker'] }, { roles: ['caseworker'] }],
    ['one suspends, the other demotes', { status: 'suspended' }, { roles: ['agency_admin'] }]
  ] as const) {
    t.test(what, async (t) => {
      const [survivor] = await activeAdmins()
      if (survivor !== undefined) {
        // Leave exactly two active admins: the two about to race.
        await h.database.db.update(users).set({ status: 'suspended' }).where(eq(users.id, survivor))
      }
      const a = await signedIn(h, ['platform_admin'])
      const b = await signedIn(h, ['platform_admin'])
      const answers = await race([[a, b, first], [b, a, second]])
      const statuses = answers.map((res) => res.statusCode)
      t.equal(statuses.filter((s) => s === 200).length, 1, 'one wins')
      // The loser is told it would remove the last (409), or, when the winner's suspension of it
      // committed before its request was authenticated, that it is no longer active (401).
      const loser = answers.find((res) => res.statusCode !== 200)
      t.ok(loser !== undefined && [401, 409].includes(loser.statusCode), `the other is refused (${statuses.join(', ')})`)
      t.match(loser?.headers['content-type'], /problem\+json/)
      t.equal((await activeAdmins()).length, 1, 'one active platform admin remains')
    })
  }

  t.test('the last one cannot suspend or demote itself; nothing changes', async (t) => {
    const [lastId] = await activeAdmins()
    const [last] = await h.database.db.select().from(users).where(eq(users.id, lastId ?? ''))
    if (last === undefined) throw new Error('no admin left')
    const tokens = await login(h, last.email)
    for (const body of [{ status: 'suspended' }, { roles: ['caseworker'] }]) {
      const res = await h.app.inject({ method: 'PATCH', url: `/v1/users/${last.id}`, payload: body, headers: { authorization: `Bearer ${tokens.accessToken}` }, remoteAddress: h.ip })
      isProblem(t, res, 409)
    }
    t.same(await activeAdmins(), [last.id])
  })

  t.test('nor can the agency that holds every active platform admin be suspended', async (t) => {
    const [lastId] = await activeAdmins()
    const [last] = await h.database.db.select().from(users).where(eq(users.id, lastId ?? ''))
    if (last === undefined) throw new Error('no admin left')
    const tokens = await login(h, last.email)
    const suspend = async (agencyId: string) => await h.app.inject({
      method: 'PATCH', url: `/v1/agencies/${agencyId}`, payload: { status: 'suspended' }, headers: { authorization: `Bearer ${tokens.accessToken}` }, remoteAddress: h.ip
    })
    isProblem(t, await suspend(last.agencyId), 409)
    const [agency] = await h.database.rows<{ status: string }>(sql`select status from agencies where id = ${last.agencyId}`)
    t.equal(agency?.status, 'active', 'nothing changed')
    const other = await signedIn(h, ['platform_admin'])
    t.equal((await suspend(last.agencyId)).statusCode, 200, 'with an admin elsewhere it may be')
    t.equal((await other.request({ method: 'GET', url: '/v1/me' })).statusCode, 200, 'an admin who can sign in remains')
  })
})
