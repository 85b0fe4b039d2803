/**
 * The agency routes, as the contract states them (DESIGN.md section 2): who may do what, the shape
 * of every answer, every refusal, and the audit event each change or refused attempt leaves behind.
 */
import { type Agency, agencies, auditEvents, type AuditAction, type AuditOutcome } from '@haven/schema'
import { and, eq, sql } from 'drizzle-orm'
import type { InjectOptions, LightMyRequestResponse } from 'fastify'
import t, { type Test } from 'tap'
import { buildHarness, type Harness, makeAgency, signedIn, unique } from './helper.ts'

type SignedIn = Awaited<ReturnType<typeof signedIn>>

const agencyKeys = ['acceptsReferrals', 'contactEmail', 'createdAt', 'id', 'kind', 'name', 'region', 'services', 'status', 'updatedAt']
const unknownId = '00000000-0000-4000-8000-000000000000'
const oneMiB = 1024 * 1024

const newAgency = (region = unique('Region')) => ({
  name: unique('Harbour Trust'),
  kind: 'ngo',
  region,
  contactEmail: `${unique('referrals')}@example.org`
})

function isProblem (t: Test, res: LightMyRequestResponse, status: number) {
  t.equal(res.statusCode, status, `answers ${status}`)
  t.match(res.headers['content-type'], /^application\/problem\+json/)
  const body = res.json()
  t.has(body, { status, requestId: res.headers['x-request-id'] })
  t.type(body.type, 'string')
  t.type(body.title, 'string')
  t.type(body.detail, 'string')
  t.notMatch(res.body, /\bat .+\.ts:\d+|select |insert |update .+ set /i, 'no stack trace or SQL')
}

/** A 400 that names exactly these paths in `errors[]`. */
function isInvalid (t: Test, res: LightMyRequestResponse, paths: string[]) {
  isProblem(t, res, 400)
  const named = [...new Set((res.json().errors ?? []).map((e: { path: string }) => e.path))].sort()
  t.same(named, [...paths].sort(), `names ${paths.join(', ')}`)
}

function isAgency (t: Test, res: LightMyRequestResponse, status: number): Agency {
  t.equal(res.statusCode, status, `answers ${status}`)
  const body = res.json<Agency>()
  t.same(Object.keys(body).sort(), agencyKeys, 'exactly the Agency fields')
  return body
}

const auditOf = async (h: Harness, res: LightMyRequestResponse) =>
  await h.database.db.select().from(auditEvents).where(eq(auditEvents.requestId, String(res.headers['x-request-id'])))

/** The request left exactly one audit event, with this action and outcome, by this caller. */
async function isAudited (t: Test, h: Harness, res: LightMyRequestResponse, action: AuditAction, outcome: AuditOutcome, actor: SignedIn, agencyId?: string) {
  const events = await auditOf(h, res)
  t.equal(events.length, 1, `one audit event for ${action}`)
  t.has(events[0], { action, outcome, actorUserId: actor.user.id, actorAgencyId: actor.agencyId, ip: h.ip, ...(agencyId !== undefined ? { targetType: 'agency', targetId: agencyId } : {}) })
  t.same(events[0]?.actorRoles, actor.user.roles)
}

const agencyRow = async (h: Harness, id: string) => (await h.database.db.select().from(agencies).where(eq(agencies.id, id)))[0]
const agenciesIn = async (h: Harness, region: string) =>
  (await h.database.db.select({ n: sql<number>`count(*)::int` }).from(agencies).where(eq(agencies.region, region)))[0]?.n

/** Callers whose roles never allow managing agencies; those with an agency belong to `agencyId`. */
async function nonAdmins (h: Harness, agencyId: string) {
  return [
    { who: 'a referrer', caller: await signedIn(h, ['referrer'], agencyId) },
    { who: 'a caseworker', caller: await signedIn(h, ['caseworker'], agencyId) },
    { who: 'an auditor', caller: await signedIn(h, ['auditor'], agencyId) },
    { who: 'a platform auditor', caller: await signedIn(h, ['platform_auditor']) },
    { who: 'an agency admin of another agency', caller: await signedIn(h, ['agency_admin']) }
  ]
}

/** Bodies the transport refuses before any schema runs. */
function transportRefusals (t: Test, send: (options: Omit<InjectOptions, 'method' | 'url'>) => Promise<LightMyRequestResponse>, body: object, unchanged: (t: Test) => Promise<void>) {
  t.test('400 for malformed JSON', async (t) => {
    isProblem(t, await send({ headers: { 'content-type': 'application/json' }, payload: '{"name": "Harbour' }), 400)
    isProblem(t, await send({ headers: { 'content-type': 'application/json' }, payload: '' }), 400)
    await unchanged(t)
  })

  t.test('415 for a text/plain body', async (t) => {
    isProblem(t, await send({ headers: { 'content-type': 'text/plain' }, payload: JSON.stringify(body) }), 415)
    isProblem(t, await send({ headers: { 'content-type': 'application/xml' }, payload: '<agency/>' }), 415)
    await unchanged(t)
  })

  t.test('413 for a body over 1 MiB', async (t) => {
    const res = await send({ headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ ...body, name: 'x'.repeat(oneMiB) }) })
    isProblem(t, res, 413)
    await unchanged(t)
  })
}

t.test('POST /v1/agencies', async (t) => {
  const h = await buildHarness(t)
  const admin = await signedIn(h, ['platform_admin'])

  t.test('a platform admin creates an agency, with defaults for what it leaves out', async (t) => {
    const input = newAgency()
    const res = await admin.request({ method: 'POST', url: '/v1/agencies', payload: input })
    const agency = isAgency(t, res, 201)
    t.has(agency, { ...input, services: [], acceptsReferrals: true, status: 'active' })
    t.match(agency.id, /^[0-9a-f-]{36}$/)
    t.equal(new Date(agency.createdAt).toISOString(), agency.createdAt, 'createdAt is ISO 8601 in UTC')
    t.equal(agency.updatedAt, agency.createdAt)
    t.has(await agencyRow(h, agency.id), { name: input.name, region: input.region, status: 'active' }, 'it is stored')
    await isAudited(t, h, res, 'agency.create', 'success', admin, agency.id)
  })

  t.test('every field can be given', async (t) => {
    const input = { ...newAgency(), kind: 'health', services: ['medical', 'mental_health'], acceptsReferrals: false }
    const agency = isAgency(t, await admin.request({ method: 'POST', url: '/v1/agencies', payload: input }), 201)
    t.has(agency, input)
  })

  t.test('401 without a token', async (t) => {
    const input = newAgency()
    isProblem(t, await h.app.inject({ method: 'POST', url: '/v1/agencies', payload: input }), 401)
    isProblem(t, await h.app.inject({ method: 'POST', url: '/v1/agencies', payload: input, headers: { authorization: 'Bearer nonsense' } }), 401)
    t.equal(await agenciesIn(h, input.region), 0)
  })

  t.test('403 for every other role, each refusal audited and nothing created', async (t) => {
    const home = await makeAgency(h)
    for (const { who, caller } of [...await nonAdmins(h, home.id), { who: 'an agency admin', caller: await signedIn(h, ['agency_admin'], home.id) }]) {
      t.test(who, async (t) => {
        const input = newAgency()
        const res = await caller.request({ method: 'POST', url: '/v1/agencies', payload: input })
        isProblem(t, res, 403)
        await isAudited(t, h, res, 'agency.create', 'denied', caller)
        t.equal(await agenciesIn(h, input.region), 0, 'nothing created')
      })
    }
  })

  t.test('400 naming each failing path; nothing created', async (t) => {
    const cases: [string, object, string[]][] = [
      ['an unknown property', { ...newAgency(), status: 'active' }, ['/body/status']],
      ['a number for the name', { ...newAgency(), name: 3 }, ['/body/name']],
      ['a bad email', { ...newAgency(), contactEmail: 'not an email' }, ['/body/contactEmail']],
      ['a kind outside the list', { ...newAgency(), kind: 'castle' }, ['/body/kind']],
      ['a service outside the list', { ...newAgency(), services: ['medical', 'massage'] }, ['/body/services/1']],
      ['a repeated service', { ...newAgency(), services: ['legal', 'legal'] }, ['/body/services']],
      ['a blank name', { ...newAgency(), name: '   ' }, ['/body/name']],
      ['a string for acceptsReferrals', { ...newAgency(), acceptsReferrals: 'yes' }, ['/body/acceptsReferrals']],
      ['missing fields', { region: unique('Region') }, ['/body/name', '/body/kind', '/body/contactEmail']],
      ['several faults at once', { ...newAgency(), name: 3, kind: 'castle', contactEmail: 'x', extra: true }, ['/body/name', '/body/kind', '/body/contactEmail', '/body/extra']]
    ]
    for (const [what, payload, paths] of cases) {
      t.test(what, async (t) => {
        isInvalid(t, await admin.request({ method: 'POST', url: '/v1/agencies', payload }), paths)
        t.equal(await agenciesIn(h, (payload as { region: string }).region), 0)
      })
    }
  })

  const region = unique('Region')
  transportRefusals(t, async (options) => await admin.request({ method: 'POST', url: '/v1/agencies', ...options }), newAgency(region),
    async (t) => { t.equal(await agenciesIn(h, region), 0, 'nothing created') })
})

t.test('GET /v1/agencies', async (t) => {
  const h = await buildHarness(t)
  const reader = await signedIn(h, ['caseworker'])
  const list = async (query: string) => await reader.request({ method: 'GET', url: `/v1/agencies?${query}` })
  const page = (res: LightMyRequestResponse) => {
    t.equal(res.statusCode, 200)
    return res.json<{ items: Agency[], nextCursor: string | null }>()
  }

  t.test('any signed-in user reads the directory; filters by kind, region and service combine', async (t) => {
    const region = unique('Filtershire')
    const police = await makeAgency(h, { region, kind: 'police', services: [] })
    const shelter = await makeAgency(h, { region, kind: 'ngo', services: ['accommodation', 'legal'] })
    const lawyers = await makeAgency(h, { region, kind: 'ngo', services: ['legal'] })
    const elsewhere = await makeAgency(h, { region: unique('Elsewhere'), kind: 'ngo', services: ['legal'] })

    const all = page(await list(`region=${region}`))
    t.same(all.items.map((a) => a.id).sort(), [police.id, shelter.id, lawyers.id].sort())
    t.equal(all.nextCursor, null, 'one page only')
    for (const item of all.items) t.same(Object.keys(item).sort(), agencyKeys)
    t.same(all.items.find((a) => a.id === shelter.id), {
      id: shelter.id, name: shelter.name, kind: 'ngo', region, contactEmail: shelter.contactEmail, services: ['accommodation', 'legal'],
      acceptsReferrals: true, status: 'active', createdAt: shelter.createdAt.toISOString(), updatedAt: shelter.updatedAt.toISOString()
    })

    t.same(page(await list(`region=${region}&kind=police`)).items.map((a) => a.id), [police.id])
    t.same(page(await list(`region=${region}&service=accommodation`)).items.map((a) => a.id), [shelter.id])
    t.same(page(await list(`region=${region}&kind=ngo&service=legal`)).items.map((a) => a.id).sort(), [shelter.id, lawyers.id].sort())
    t.same(page(await list(`region=${region}&kind=helpline`)).items, [])
    t.notOk(all.items.some((a) => a.id === elsewhere.id), 'the region filter leaves other regions out')
  })

  t.test('401 without a token', async (t) => {
    isProblem(t, await h.app.inject({ method: 'GET', url: '/v1/agencies' }), 401)
  })

  t.test('400 naming the failing query parameters', async (t) => {
    isInvalid(t, await list('kind=castle'), ['/querystring/kind'])
    isInvalid(t, await list('service=massage'), ['/querystring/service'])
    isInvalid(t, await list('limit=0'), ['/querystring/limit'])
    isInvalid(t, await list('limit=201'), ['/querystring/limit'])
    isInvalid(t, await list('limit=ten'), ['/querystring/limit'])
    isInvalid(t, await list('colour=blue'), ['/querystring/colour'])
    t.equal((await list('limit=200')).statusCode, 200, '200 is the largest page')
  })

  t.test('an invalid cursor is 400', async (t) => {
    const forged = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url')
    for (const cursor of ['not-a-cursor', forged({ name: 'a' }), forged(['a']), forged(['a', 'not-a-uuid']), forged([1, unknownId]), 'x'.repeat(501)]) {
      isProblem(t, await list(`cursor=${cursor}`), 400)
    }
    const nul = await list(`cursor=${forged(['\u0000', unknownId])}`)
    t.equal(nul.statusCode, 400, 'a cursor with a NUL character is refused, not sent to the database')
  })

  t.test('pages hold 50 by default, up to 200 on request', async (t) => {
    const region = unique('Crowdshire')
    await h.database.db.insert(agencies).values(Array.from({ length: 51 }, (_, i) => ({
      name: `Crowd ${String(i).padStart(2, '0')}`, kind: 'ngo' as const, region, contactEmail: `${unique('crowd')}@example.org`
    })))
    const first = page(await list(`region=${region}`))
    t.equal(first.items.length, 50)
    t.type(first.nextCursor, 'string')
    t.equal(page(await list(`region=${region}&cursor=${first.nextCursor}`)).items.length, 1)
    const whole = page(await list(`region=${region}&limit=200`))
    t.equal(whole.items.length, 51)
    t.equal(whole.nextCursor, null)
  })

  t.test('keyset pagination: pages are stable while agencies are being created', async (t) => {
    const region = unique('Pageshire')
    const originals = []
    // Two agencies share a name: the id breaks the tie, and the pair must not be split wrongly.
    for (const name of ['Bravo', 'Delta', 'Delta', 'Foxtrot', 'Hotel', 'Juliet', 'Lima', 'November']) {
      originals.push(await makeAgency(h, { region, name }))
    }
    const whole = page(await list(`region=${region}&limit=200`)).items.map((a) => a.id)
    t.equal(whole.length, originals.length)

    const arrivals = [['Alpha', 'Echo', 'Zulu'], ['Charlie', 'India', 'Kilo'], ['Golf', 'Mike', 'Oscar'], ['Papa'], ['Quebec']]
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const current = page(await list(`region=${region}&limit=3${cursor !== null ? `&cursor=${cursor}` : ''}`))
      t.ok(current.items.length <= 3, 'no page is longer than the limit')
      seen.push(...current.items.map((a) => a.id))
      cursor = current.nextCursor
      for (const name of arrivals[pages] ?? []) await makeAgency(h, { region, name })
      pages++
    } while (cursor !== null && pages < 20)

    t.equal(cursor, null, 'the last page says so')
    t.equal(new Set(seen).size, seen.length, 'no agency appears twice')
    const zulu = (await h.database.db.select().from(agencies).where(and(eq(agencies.region, region), eq(agencies.name, 'Zulu'))))[0]
    t.ok(zulu !== undefined && seen.includes(zulu.id), 'an agency created later in the order is reached')
    const originalIds = originals.map((a) => a.id)
    t.same(seen.filter((id) => originalIds.includes(id)), whole, 'every original agency appears, in directory order')
  })
})

t.test('GET /v1/agencies/:id', async (t) => {
  const h = await buildHarness(t)
  const agency = await makeAgency(h, { kind: 'local_authority', services: ['safety_planning'] })
  const reader = await signedIn(h, ['referrer'])

  t.test('any signed-in user reads any agency', async (t) => {
    const body = isAgency(t, await reader.request({ method: 'GET', url: `/v1/agencies/${agency.id}` }), 200)
    t.has(body, { id: agency.id, name: agency.name, kind: 'local_authority', services: ['safety_planning'] })
  })

  t.test('401 without a token', async (t) => {
    isProblem(t, await h.app.inject({ method: 'GET', url: `/v1/agencies/${agency.id}` }), 401)
  })

  t.test('404 for an unknown id', async (t) => {
    isProblem(t, await reader.request({ method: 'GET', url: `/v1/agencies/${unknownId}` }), 404)
  })

  t.test('400 for an id that is not a UUID', async (t) => {
    isInvalid(t, await reader.request({ method: 'GET', url: '/v1/agencies/42' }), ['/params/id'])
  })
})

t.test('PATCH /v1/agencies/:id', async (t) => {
  const h = await buildHarness(t)
  const platformAdmin = await signedIn(h, ['platform_admin'])
  const patch = async (caller: SignedIn, id: string, payload: unknown) =>
    await caller.request({ method: 'PATCH', url: `/v1/agencies/${id}`, payload: payload as object })

  /** Runs `refused` against a fresh agency and checks that the row did not change. */
  const unchangedBy = async (t: Test, refused: (agencyId: string) => Promise<void>) => {
    const agency = await makeAgency(h)
    await refused(agency.id)
    t.same(await agencyRow(h, agency.id), agency, 'the agency is unchanged')
  }

  t.test('a platform admin changes anything, status included', async (t) => {
    const agency = await makeAgency(h)
    const changes = {
      name: unique('Renamed'), kind: 'health', region: unique('Region'), contactEmail: `${unique('new')}@example.org`,
      services: ['medical', 'interpreter'], acceptsReferrals: false, status: 'suspended'
    }
    const res = await patch(platformAdmin, agency.id, changes)
    const body = isAgency(t, res, 200)
    t.has(body, { id: agency.id, ...changes, createdAt: agency.createdAt.toISOString() })
    t.ok(body.updatedAt >= agency.updatedAt.toISOString(), 'updatedAt moves forward')
    t.has(await agencyRow(h, agency.id), { name: changes.name, status: 'suspended', acceptsReferrals: false })
    await isAudited(t, h, res, 'agency.update', 'success', platformAdmin, agency.id)

    const reinstated = await patch(platformAdmin, agency.id, { status: 'active' })
    t.has(isAgency(t, reinstated, 200), { status: 'active', name: changes.name }, 'fields not sent are kept')
  })

  t.test('an agency admin edits its own agency\'s profile', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const res = await patch(admin, admin.agencyId, { name: unique('Our new name'), services: ['legal'] })
    t.has(isAgency(t, res, 200), { id: admin.agencyId, services: ['legal'], status: 'active' })
    await isAudited(t, h, res, 'agency.update', 'success', admin, admin.agencyId)
  })

  t.test('403 for an agency admin changing its own agency\'s status, audited, nothing changed', async (t) => {
    const admin = await signedIn(h, ['agency_admin'])
    const before = await agencyRow(h, admin.agencyId)
    for (const payload of [{ status: 'suspended' }, { status: 'active' }, { name: unique('Sneaky'), status: 'suspended' }]) {
      const res = await patch(admin, admin.agencyId, payload)
      isProblem(t, res, 403)
      await isAudited(t, h, res, 'agency.update', 'denied', admin, admin.agencyId)
    }
    t.same(await agencyRow(h, admin.agencyId), before, 'the agency is unchanged')
  })

  t.test('403 for every other role, audited, nothing changed', async (t) => {
    const agency = await makeAgency(h)
    for (const { who, caller } of await nonAdmins(h, agency.id)) {
      t.test(who, async (t) => {
        const res = await patch(caller, agency.id, { name: unique('Hijacked') })
        isProblem(t, res, 403)
        await isAudited(t, h, res, 'agency.update', 'denied', caller, agency.id)
        t.same(await agencyRow(h, agency.id), agency, 'the agency is unchanged')
      })
    }
  })

  t.test('401 without a token', async (t) => {
    await unchangedBy(t, async (agencyId) => {
      isProblem(t, await h.app.inject({ method: 'PATCH', url: `/v1/agencies/${agencyId}`, payload: { name: 'x' } }), 401)
    })
  })

  t.test('404 for an unknown id', async (t) => {
    const res = await patch(platformAdmin, unknownId, { name: unique('Ghost') })
    isProblem(t, res, 404)
    t.notOk((await auditOf(h, res)).some((e) => e.outcome === 'success'), 'no success is recorded')
  })

  t.test('400 naming each failing path; nothing changed', async (t) => {
    const cases: [string, unknown, string[]][] = [
      ['an empty patch', {}, ['/body']],
      ['an unknown property', { id: unknownId }, ['/body/id']],
      ['a number for the name', { name: 3 }, ['/body/name']],
      ['a blank name', { name: '' }, ['/body/name']],
      ['a bad email', { contactEmail: 'inbox@' }, ['/body/contactEmail']],
      ['a kind outside the list', { kind: 'castle' }, ['/body/kind']],
      ['a status outside the list', { status: 'closed' }, ['/body/status']],
      ['null for a field', { services: null }, ['/body/services']],
      ['not an object', [{ name: 'x' }], ['/body']],
      ['several faults at once', { name: 3, kind: 'castle', createdAt: 'now' }, ['/body/name', '/body/kind', '/body/createdAt']]
    ]
    for (const [what, payload, paths] of cases) {
      t.test(what, async (t) => {
        await unchangedBy(t, async (agencyId) => { isInvalid(t, await patch(platformAdmin, agencyId, payload), paths) })
      })
    }
  })

  t.test('400 for an id that is not a UUID', async (t) => {
    isInvalid(t, await patch(platformAdmin, 'not-a-uuid', { name: 'x' }), ['/params/id'])
  })

  t.test('transport refusals', async (t) => {
    const agency = await makeAgency(h)
    transportRefusals(t, async (options) => await platformAdmin.request({ method: 'PATCH', url: `/v1/agencies/${agency.id}`, ...options }),
      { name: unique('Too late') }, async (t) => { t.same(await agencyRow(h, agency.id), agency, 'the agency is unchanged') })
  })
})
