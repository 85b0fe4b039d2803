/**
 * Test fixtures: the real app on the test database (made fresh by `pnpm test`) and the real Redis.
 * Each test makes its own agencies and users, so files run in parallel without truncating anything.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { agencies, type AgencyKind, type AgencyService, type Database, openDatabase, type Role, users } from '@haven/schema'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { Redis } from 'ioredis'
import type { DestinationStream } from 'pino'
import postgres from 'postgres'
import type { Test } from 'tap'

import { buildApp } from '../src/app.ts'
import { hashPassword } from '../src/auth/passwords.ts'
import { type ApiConfig, loadConfig } from '../src/config.ts'
import { loadSigningKeys } from '../src/keys.ts'
import { connectRedis } from '../src/redis.ts'

export const password = 'correct horse battery staple'
const passwordHash = hashPassword(password)
const privateKeyPem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

export const testConfig = (overrides: Record<string, string> = {}): ApiConfig => loadConfig({
  NODE_ENV: 'test',
  DATABASE_URL: process.env.DATABASE_URL,
  REDIS_URL: process.env.REDIS_URL,
  HAVEN_JWT_PRIVATE_KEY: privateKeyPem,
  HAVEN_RATE_LIMIT_USER_PER_MIN: '100000',
  HAVEN_RATE_LIMIT_IP_PER_MIN: '100000',
  ...overrides
})

export interface Harness {
  app: FastifyInstance
  database: Database
  /** The app's own Redis client (readiness only). */
  redis: Redis
  /** An address of its own for each harness, so sign-in throttling in one test can't touch another. */
  ip: string
}

export interface HarnessOptions {
  /** Environment overrides for the app's configuration. */
  env?: Record<string, string>
  logStream?: DestinationStream
  /** Sees every SQL statement the app sends (to count them). */
  onQuery?: (statement: string) => void
}

export async function buildHarness (t: Test, { env = {}, logStream, onQuery }: HarnessOptions = {}): Promise<Harness> {
  const config = testConfig(env)
  const database = await openDatabase({ url: config.databaseUrl, max: 4, ...(onQuery !== undefined ? { onQuery } : {}) })
  const redis = connectRedis(config.redisUrl)
  const app = await buildApp({ config, database, redis, keys: loadSigningKeys(config), ...(logStream !== undefined ? { logStream } : {}) })
  t.teardown(async () => {
    await app.close()
    redis.disconnect()
    await database.close()
  })
  return { app, database, redis, ip: randomIp() }
}

export const randomIp = () => `10.${randomBytes(1)[0]}.${randomBytes(1)[0]}.${randomBytes(1)[0]}`
export const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`

export async function makeAgency (h: Harness, fields: { kind?: AgencyKind, region?: string, services?: AgencyService[], acceptsReferrals?: boolean, name?: string } = {}) {
  const [row] = await h.database.db.insert(agencies).values({
    name: fields.name ?? unique('Test Agency'),
    kind: fields.kind ?? 'ngo',
    region: fields.region ?? 'Testshire',
    contactEmail: `${unique('inbox')}@example.org`,
    services: fields.services ?? [],
    acceptsReferrals: fields.acceptsReferrals ?? true
  }).returning()
  if (row === undefined) throw new Error('no agency')
  return row
}

export async function makeUser (h: Harness, agencyId: string, roles: Role[], fields: { email?: string } = {}) {
  const [row] = await h.database.db.insert(users).values({
    agencyId,
    email: fields.email ?? `${unique('user')}@example.org`,
    name: 'Test Person',
    roles,
    passwordHash: await passwordHash
  }).returning()
  if (row === undefined) throw new Error('no user')
  return row
}

export async function login (h: Harness, email: string, pw = password) {
  const res = await h.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: pw }, remoteAddress: h.ip })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json<{ accessToken: string, refreshToken: string }>()
}

/** A signed-in user of a fresh agency (or of `agencyId`), with a request function that carries its token. */
export async function signedIn (h: Harness, roles: Role[], agencyId?: string) {
  const agency = agencyId ?? (await makeAgency(h)).id
  const user = await makeUser(h, agency, roles)
  const tokens = await login(h, user.email)
  const request = async (options: InjectOptions): Promise<LightMyRequestResponse> => await h.app.inject({
    remoteAddress: h.ip,
    ...options,
    headers: { authorization: `Bearer ${tokens.accessToken}`, ...options.headers }
  })
  return { user, agencyId: agency, tokens, request }
}

/**
 * Referral bodies with obviously fake people. Every identity, contact and circumstances value carries
 * the word "Canary", so a test can search anything (lists, logs, audit rows) for leaks.
 */
export const referralBodies = {
  /** An adult who consented to sharing with `sharingAllowedWith` ("any" by default). */
  consent: (sharingAllowedWith: 'any' | string[] = 'any') => ({
    subject: {
      ageGroup: 'adult', gender: 'female', languages: ['ro'], interpreterNeeded: true,
      givenName: 'Canary', familyName: 'Testperson', aliases: ['Canary Alias'], dateOfBirth: '1990-01-01', nationality: 'Canaryland',
      contact: { phone: '+44 7700 900000 Canary', address: '1 Canary Street, Testtown', safeToContact: true, notes: 'Canary contact note' }
    },
    exploitation: {
      types: ['labour'], area: 'Testtown',
      indicators: ['restricted_movement', 'no_id_documents'], narrative: 'Canary narrative of what was seen.', encounteredAt: '2026-11-01T10:00:00.000Z'
    },
    urgency: 'high',
    needs: ['accommodation', 'interpreter'],
    consent: { basis: 'consent', recordedAt: '2026-11-01T11:00:00.000Z', method: 'verbal', sharingAllowedWith }
  }),
  /** A child: shared under safeguarding, no consent. */
  child: () => ({
    subject: { ageGroup: 'child', givenName: 'Canary', familyName: 'Youngperson' },
    exploitation: { types: ['criminal'], area: 'Testtown', narrative: 'Canary county lines narrative.' },
    urgency: 'immediate',
    consent: { basis: 'child_safeguarding' }
  }),
  /** An adult who did not consent: anonymous. */
  anonymous: () => ({
    subject: { ageGroup: 'adult', gender: 'male' },
    exploitation: { types: ['sexual'], area: 'Testtown', indicators: ['fearful_or_withdrawn'] },
    urgency: 'standard',
    consent: { basis: 'duty_to_notify' }
  })
}

/**
 * A throwaway, migrated database of its own on the test server, dropped when the test ends: for
 * tests that run a worker (whose relay would otherwise pick up every other test's outbox rows) or
 * that tamper with data.
 */
export async function freshDatabaseUrl (t: Test): Promise<string> {
  const serverUrl = process.env.HAVEN_TEST_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
  const name = `haven_own_${Date.now()}_${randomBytes(3).toString('hex')}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const database = await openDatabase({ url: url.toString(), max: 1 })
  await database.migrate()
  await database.close()
  t.teardown(async () => {
    await admin.unsafe(`drop database if exists "${name}" with (force)`)
    await admin.end()
  })
  return url.toString()
}

/** Polls `check` until it returns something other than undefined or false, for at most `ms`. */
export async function waitFor<T> (check: () => Promise<T | undefined | false>, ms = 15_000, what = 'the condition'): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await check()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
