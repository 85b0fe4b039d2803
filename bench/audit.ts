/**
 * `pnpm bench:audit`: the audit trail's speed, each figure next to a baseline measured in the same
 * run on the same machine.
 *
 * 1. INSERT: pgbench appending audit events (8 clients, one INSERT per transaction): the raw rate
 *    the database takes them at, which the sealer must keep up with.
 * 2. Sealer alone: 1,000,000 events seeded in bulk with SQL, then sealed from scratch; next to raw
 *    SHA-256 in Node over the same canonical bytes (event hash + chain hash, no database).
 * 3. Verification (twice: right after sealing, and again): the whole chain recomputed and checked
 *    against its checkpoints; next to the same raw SHA-256 figure.
 * 4. A referral's access log (its 50 newest events) over the 1,000,000: p50/p95 of the query alone
 *    and of the whole HTTP request (auth, audit write); next to a primary-key lookup on the table.
 * 5. Sealer lag under load: pgbench appending events while the sealer loop runs; the age of the
 *    oldest unsealed event, sampled every 100 ms.
 *
 * Runs on a fresh database on the PostgreSQL at DATABASE_URL (default: local), dropped at the end.
 * BENCH_EVENTS changes the number of events (default 1,000,000).
 */
import { spawn } from 'node:child_process'
import { generateKeyPairSync, hash, randomInt } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildApp, connectRedis, loadConfig, loadSigningKeys } from '@haven/api'
import {
  canonicalEventBytes, chainEventColumns, type ChainEventRow, openDatabase, rowsOf, sql, toChainEvent, verifyAuditChain
} from '@haven/schema'
import postgres from 'postgres'
import { pageAuditEvents } from '../services/api/src/audit/audit.queries.ts'
import { auditSigningKey, sealAuditBatch, startSealer } from '../services/worker/src/sealer.ts'
import { runBench, undoOnInterrupt } from './harness.ts'

const events = Number(process.env.BENCH_EVENTS ?? 1_000_000)
const referralCount = 20_000
const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const say = (line: string) => { process.stderr.write(`${line}\n`) }
const percentile = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(p * values.length))] ?? 0
const rate = (n: number, ms: number) => Math.round(n / (ms / 1000))
const fmt = (n: number) => n.toLocaleString('en-GB')

const insertScript = `insert into audit_events (actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id, request_id, ip)
values (gen_random_uuid(), gen_random_uuid(), '{caseworker}', 'referral.read', 'success', gen_random_uuid(), 'referral', gen_random_uuid(), 'bench', '10.0.0.1');
`

/** pgbench with the insert script; resolves to transactions a second. */
async function pgbench (url: string, seconds: number, clients = 8): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'haven-bench-'))
  const script = join(dir, 'insert.sql')
  writeFileSync(script, insertScript)
  const parsed = new URL(url)
  const args = ['-n', '-c', String(clients), '-j', '2', '-T', String(seconds), '-f', script,
    '-h', parsed.hostname, '-p', parsed.port || '5432', '-U', decodeURIComponent(parsed.username || 'postgres'), parsed.pathname.slice(1)]
  let output: string
  try {
    output = await new Promise<string>((resolve, reject) => {
      const child = spawn('pgbench', args, { env: { ...process.env, PGPASSWORD: decodeURIComponent(parsed.password) } })
      let out = ''
      child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
      child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString() })
      child.on('error', reject)
      child.on('close', (code) => { if (code === 0) resolve(out); else reject(new Error(`pgbench exited ${code}: ${out}`)) })
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const tps = /tps = ([\d.]+)/.exec(output)
  if (tps === null) throw new Error(`no tps in pgbench output: ${output}`)
  return Number(tps[1])
}

async function main () {
  const name = `haven_bench_audit_${Date.now()}`
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
  const dataDir = mkdtempSync(join(tmpdir(), 'haven-bench-audit-'))
  const dropAll = async () => {
    await admin.unsafe(`drop database if exists "${name}" with (force)`)
    rmSync(dataDir, { recursive: true, force: true })
  }
  const undo = undoOnInterrupt(dropAll)
  await admin.unsafe(`create database "${name}"`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const database = await openDatabase({ url: url.toString(), max: 8 })
  const results: Record<string, unknown> = { events, machine: { node: process.version } }
  try {
    await database.migrate()
    const db = database.db
    const raw = postgres(url.toString(), { max: 1, onnotice: () => {} })
    results.postgres = (await raw`show server_version`)[0]?.server_version

    // 1. Raw INSERT rate.
    say('pgbench: raw audit INSERT rate, 8 clients, 10 s …')
    const insertRate = await pgbench(url.toString(), 10)
    results.insertPerSecond = Math.round(insertRate)

    // Seed: an agency, a user, 20,000 referrals, and 1,000,000 events spread over them.
    say(`seeding ${fmt(events)} events over ${fmt(referralCount)} referrals …`)
    const seedStarted = performance.now()
    const [agency] = await raw`insert into agencies (name, kind, region, contact_email) values ('Bench Police', 'police', 'Benchshire', 'bench@example.org') returning id`
    const [user] = await raw`insert into users (agency_id, email, name, roles, password_hash) values (${agency?.id as string}, 'bench.auditor@example.org', 'Bench Auditor', '{platform_auditor}', 'x') returning id`
    await raw`
      insert into referrals (urgency, age_group, consent_basis, summary, consent, origin_agency_id, created_by)
      select 'standard', 'adult', 'duty_to_notify', '{"subject":{"ageGroup":"adult"},"exploitation":{"types":["labour"],"area":"Bench"}}',
             '{"basis":"duty_to_notify"}', ${agency?.id as string}, ${user?.id as string}
      from generate_series(1, ${referralCount}::int)`
    await raw`create temporary table bench_referrals as select row_number() over () as n, id from referrals`
    for (let done = 0; done < events; done += 250_000) {
      const count = Math.min(250_000, events - done)
      await raw`
        insert into audit_events (actor_user_id, actor_agency_id, actor_roles, action, outcome, referral_id, target_type, target_id, purpose, request_id, ip)
        select gen_random_uuid(), gen_random_uuid(), '{caseworker}', 'referral.read', 'success', r.id, 'referral', r.id, 'case_management',
               gen_random_uuid()::text, '10.' || (g % 250) || '.' || (g % 199) || '.' || (g % 97)
        from generate_series(1, ${count}::int) g
        join bench_referrals r on r.n = 1 + (g * 7919) % ${referralCount}::int`
    }
    await raw`vacuum analyze audit_events`
    const total = Number((await raw`select count(*)::int as n from audit_events`)[0]?.n)
    results.seedSeconds = Math.round((performance.now() - seedStarted) / 100) / 10
    say(`  ${fmt(total)} events in ${String(results.seedSeconds)} s`)

    // 2. Sealer alone, from an empty chain.
    const keys = generateKeyPairSync('ed25519')
    const sealerConfig = {
      env: 'test' as const, dataDir, auditSigningKeyPem: keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      checkpointFile: join(dataDir, 'checkpoints.ndjson'), checkpointIntervalSeconds: 60, checkpointEveryEvents: 10_000
    }
    const signingKey = auditSigningKey(sealerConfig).privateKey
    say('sealing …')
    const sealStarted = performance.now()
    let sealed = 0
    for (;;) {
      const batch = await sealAuditBatch(db, signingKey, { batchSize: 5000, checkpointEveryEvents: 10_000, checkpointIntervalSeconds: 60 })
      sealed += batch.sealed
      if (batch.sealed === 0 && sealed >= total) break
    }
    const sealMs = performance.now() - sealStarted
    results.sealerPerSecond = rate(sealed, sealMs)

    // Baseline: SHA-256 in Node over the same canonical bytes (event hash, then chain hash), timed
    // alone, the cheapest way Node 20 offers: one-shot `crypto.hash` returning a latin1 string (a
    // Buffer result costs 2-3 times as much per call), into one reused 64-byte chain input.
    say('raw SHA-256 over the same bytes …')
    let hashMs = 0
    let hashed = 0
    let bytes = 0
    const chainInput = Buffer.alloc(64)
    for (let after = 0; ;) {
      const rows = await rowsOf<ChainEventRow>(db, sql`select ${chainEventColumns} from audit_events e where e.seq > ${after} order by e.seq limit 20000`)
      if (rows.length === 0) break
      after = Number(rows[rows.length - 1]?.seq)
      const canonical = rows.map((row) => canonicalEventBytes(toChainEvent(row)))
      const started = performance.now()
      for (const item of canonical) {
        chainInput.write(hash('sha256', item, 'binary'), 32, 'latin1')
        chainInput.write(hash('sha256', chainInput, 'binary'), 0, 'latin1')
        bytes += item.length
      }
      hashMs += performance.now() - started
      hashed += rows.length
    }
    results.rawSha256PerSecond = rate(hashed, hashMs)
    results.canonicalBytesPerEvent = Math.round(bytes / hashed)

    // 3. Verification of the whole chain, twice: first right after sealing, when PostgreSQL still
    // sets the hint bits of a million fresh seal rows as it reads them (a trail sealed over days has
    // had autovacuum do that), then again.
    for (const pass of ['verifyFirst', 'verify'] as const) {
      say(pass === 'verify' ? 'verifying again …' : 'verifying …')
      const verifyStarted = performance.now()
      const verification = await verifyAuditChain(db, { publicKey: keys.publicKey, checkpointFile: sealerConfig.checkpointFile })
      const verifyMs = performance.now() - verifyStarted
      if (!verification.ok) throw new Error(`verification failed: ${JSON.stringify(verification.firstMismatch)}`)
      results[`${pass}PerSecond`] = rate(verification.checked, verifyMs)
      results[`${pass}Seconds`] = Math.round(verifyMs / 100) / 10
    }

    // 4. Access log of one referral over the whole trail.
    say('access-log queries …')
    const referralIds = (await raw`select id from referrals`).map((r) => r.id as string)
    const eventIds = (await raw`select id from audit_events tablesample system (1) limit 2000`).map((r) => r.id as string)
    const samples = 500
    const timed = async (work: () => Promise<unknown>) => { const started = performance.now(); await work(); return performance.now() - started }
    const pkLookup: number[] = []
    const query: number[] = []
    for (let i = 0; i < samples; i++) {
      const eventId = eventIds[randomInt(eventIds.length)] ?? ''
      pkLookup.push(await timed(async () => await raw`select * from audit_events where id = ${eventId}`))
      const referralId = referralIds[randomInt(referralIds.length)] ?? ''
      query.push(await timed(async () => await pageAuditEvents(db, { kind: 'all' }, { referralId }, { beforeSeq: undefined, limit: 50 })))
    }
    const config = loadConfig({
      NODE_ENV: 'test', DATABASE_URL: url.toString(), HAVEN_DATA_DIR: dataDir, HAVEN_RATE_LIMIT_USER_PER_MIN: '1000000',
      HAVEN_JWT_PRIVATE_KEY: generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      HAVEN_AUDIT_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString()
    })
    const redis = connectRedis(config.redisUrl)
    const app = await buildApp({ config, database, redis, keys: loadSigningKeys(config) })
    const token = app.signAccessToken(user?.id as string)
    const request: number[] = []
    for (let i = 0; i < samples; i++) {
      const referralId = referralIds[randomInt(referralIds.length)] ?? ''
      request.push(await timed(async () => {
        const res = await app.inject({ method: 'GET', url: `/v1/referrals/${referralId}/access-log`, headers: { authorization: `Bearer ${token}` } })
        if (res.statusCode !== 200) throw new Error(`access log: ${res.statusCode} ${res.body}`)
      }))
    }
    await app.close()
    redis.disconnect()
    const ms = (values: number[]) => ({ p50: Math.round(percentile(values, 0.5) * 100) / 100, p95: Math.round(percentile(values, 0.95) * 100) / 100 })
    results.accessLogQueryMs = ms(query)
    results.accessLogRequestMs = ms(request)
    results.primaryKeyLookupMs = ms(pkLookup)

    // 5. Sealer lag while pgbench appends events.
    say('sealer lag under load: pgbench 8 clients, 15 s, with the sealer loop running …')
    const sealer = startSealer({ database, config: sealerConfig, log: { info: () => {}, warn: () => {}, error: (o: unknown) => { say(`sealer error: ${JSON.stringify(o)}`) } } })
    // The access-log step (4) left its own audit events unsealed: seal them before sampling, or the
    // first samples report their age (the time step 4 took), not the sealer's lag under load.
    await sealer.sealOnce()
    let maxLag = 0
    const lags: number[] = []
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const [row] = await rowsOf<{ lag: string | null }>(db, sql`
          select extract(epoch from clock_timestamp() - e.occurred_at)::text as lag
          from audit_events e
          where (e.xid, e.seq) > (select ev.xid, ev.seq from audit_seals s join audit_events ev on ev.id = s.event_id order by s.position desc limit 1)
          order by e.xid, e.seq limit 1`)
        const lag = Number(row?.lag ?? 0)
        lags.push(lag)
        maxLag = Math.max(maxLag, lag)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    })()
    const loadRate = await pgbench(url.toString(), 15)
    const drainStarted = performance.now()
    for (;;) {
      const [row] = await raw`select (select count(*) from audit_events) - (select count(*) from audit_seals) as unsealed`
      if (Number(row?.unsealed) === 0) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const drainMs = performance.now() - drainStarted
    sampling = false
    await sampler
    await sealer.stop()
    results.underLoad = {
      insertPerSecond: Math.round(loadRate),
      maxLagSeconds: Math.round(maxLag * 100) / 100,
      p95LagSeconds: Math.round(percentile(lags, 0.95) * 100) / 100,
      drainAfterLoadMs: Math.round(drainMs)
    }
    await raw.end()

    const r = results as {
      insertPerSecond: number, sealerPerSecond: number, rawSha256PerSecond: number, verifyPerSecond: number, verifySeconds: number,
      verifyFirstPerSecond: number, verifyFirstSeconds: number,
      accessLogQueryMs: { p50: number, p95: number }, accessLogRequestMs: { p50: number, p95: number }, primaryKeyLookupMs: { p50: number, p95: number },
      underLoad: { insertPerSecond: number, maxLagSeconds: number, p95LagSeconds: number, drainAfterLoadMs: number }, canonicalBytesPerEvent: number
    }
    process.stdout.write([
      '',
      `audit trail benchmark: ${fmt(total)} events, PostgreSQL ${String(results.postgres)}, Node ${process.version}`,
      '',
      '| measure | result | baseline (same run) |',
      '|---|---|---|',
      `| sealer alone (events/s) | ${fmt(r.sealerPerSecond)} | raw INSERT ${fmt(r.insertPerSecond)}/s (pgbench, 8 clients); raw SHA-256 ${fmt(r.rawSha256PerSecond)}/s |`,
      `| verification (events/s) | ${fmt(r.verifyPerSecond)} (${r.verifySeconds} s); first, right after sealing: ${fmt(r.verifyFirstPerSecond)} (${r.verifyFirstSeconds} s) | raw SHA-256 over the same ${r.canonicalBytesPerEvent}-byte events ${fmt(r.rawSha256PerSecond)}/s |`,
      `| access log, query p50 / p95 (ms) | ${r.accessLogQueryMs.p50} / ${r.accessLogQueryMs.p95} | primary-key lookup ${r.primaryKeyLookupMs.p50} / ${r.primaryKeyLookupMs.p95} |`,
      `| access log, HTTP request p50 / p95 (ms) | ${r.accessLogRequestMs.p50} / ${r.accessLogRequestMs.p95} | (auth + audit write + query) |`,
      `| sealer lag under load: max / p95 (s) | ${r.underLoad.maxLagSeconds} / ${r.underLoad.p95LagSeconds} | while pgbench appended ${fmt(r.underLoad.insertPerSecond)}/s; drained ${r.underLoad.drainAfterLoadMs} ms after |`,
      ''
    ].join('\n'))
    mkdirSync(new URL('results', import.meta.url), { recursive: true })
    writeFileSync(new URL(`results/audit-${Date.now()}.json`, import.meta.url), `${JSON.stringify(results, null, 2)}\n`)
  } finally {
    await database.close()
    await dropAll()
    undo.cancel()
    await admin.end()
  }
}

await runBench(main)
