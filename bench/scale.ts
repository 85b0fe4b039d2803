/**
 * `pnpm bench:scale`: the read and list scenarios as the data grows, each next to pgbench on the
 * same statements, at the same concurrency as `pnpm bench`.
 *
 * Sizes (BENCH_SCALE_SIZES, default 10,000 and 1,000,000 referrals), seeded in bulk SQL one after the
 * other in the same database; each size has ten audit events per referral, up to BENCH_SCALE_EVENTS
 * (default 10,000,000) at the largest. Audit events are inserted with the table's secondary indexes
 * dropped and rebuilt afterwards from their own definitions (a sort per index instead of ten
 * million scattered inserts into each); BENCH_SCALE_SEED_MINUTES (default 25) bounds the seeding
 * of events, and the report says how many there were.
 *
 * Only the API runs: the worker's sealer would spend its first quarter of an hour sealing the seeded
 * events, on the same two cores. Reports p50 and p99 at each size and their growth, largest over
 * smallest, and writes JSON under bench/results/.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { cloneReferrals, createDatabase, fmt, idPrefixes, round, runBench, say, seedAuditEvents, seedShares, status, table, undoOnInterrupt } from './harness.ts'
import { measure, type ScenarioResult, scenarios, seedPeople, startCaptureApp, startStack } from './scenarios.ts'

const sizes = (process.env.BENCH_SCALE_SIZES ?? '10000,1000000').split(',').map(Number).sort((a, b) => a - b)
const maxEvents = Number(process.env.BENCH_SCALE_EVENTS ?? 10_000_000)
const seedMinutes = Number(process.env.BENCH_SCALE_SEED_MINUTES ?? 25)
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 10)
const seconds = Number(process.env.BENCH_SECONDS ?? 10)
const scopedCount = 2_000
const keys = ['read-origin', 'read-scoped', 'list', 'access-log']

interface SizeResult { referrals: number, auditEvents: number, seedSeconds: number, scenarios: ScenarioResult[] }

async function main () {
  const started = performance.now()
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, loadAverageAtStart: loadavg().map((l) => round(l)) }
  say(`pnpm bench:scale: ${sizes.map(fmt).join(' → ')} referrals, up to ${fmt(maxEvents)} audit events; ${concurrency} connections/clients, ${seconds} s a side`)
  const db = await createDatabase('haven_bench_scale')
  // The services started later register their own stop (scenarios.ts), undone before this.
  const undo = undoOnInterrupt(db.drop)
  let stop = async () => {}
  try {
    const stack = await startStack(db, { worker: false })
    stop = stack.stop
    const people = await seedPeople(db, stack.base)
    const capture = await startCaptureApp(db, stack.env)
    stop = async () => { await capture.close(); await stack.stop() }

    const results: SizeResult[] = []
    let referrals = 0
    let events = 0
    for (const size of sizes) {
      const seedStarted = performance.now()
      say(`seeding to ${fmt(size)} referrals …`)
      // Referral n was created n minutes ago: the ones seeded first stay the newest.
      await cloneReferrals(db, people.templateId, referrals + 1, size - referrals)
      if (referrals < scopedCount) {
        const count = Math.min(scopedCount, size) - referrals
        await seedShares(db, { prefix: idPrefixes.scopedShare, from: referrals + 1, count, agencyId: people.scopedNgo, createdBy: people.referrerId, status: 'accepted', scopes: ['identity', 'circumstances'], decidedBy: people.scopedCaseworkerId })
      }
      referrals = size
      const target = Math.min(maxEvents, size * 10)
      if (target > events) events = await seedEvents(db, { from: events, to: target, referrals: size, people, deadline: seedStarted + seedMinutes * 60_000 })
      say(`  vacuum analyze …`)
      await db.sql`vacuum analyze`
      // Seeding leaves gigabytes of dirty pages; without a checkpoint here, their write-back runs
      // during the first scenarios and shows as their tail latency, not as the cost of the size.
      say(`  checkpoint …`)
      await db.sql`checkpoint`
      const seedSeconds = round((performance.now() - seedStarted) / 1000, 0)
      say(`  ${fmt(size)} referrals and ${fmt(events)} audit events, seeded in ${seedSeconds} s`)
      const list = scenarios(people, { referrals: size, scoped: Math.min(scopedCount, size) }).filter((s) => keys.includes(s.key))
      const measured: ScenarioResult[] = []
      for (const [index, scenario] of list.entries()) {
        measured.push(await measure({ db, stack, capture, scenario, concurrency, seconds, warmupSeconds: 3, label: `[${fmt(size)}: ${index + 1}/${list.length}] ${scenario.title}` }))
      }
      results.push({ referrals: size, auditEvents: events, seedSeconds, scenarios: measured })
    }

    const out: string[] = ['']
    for (const size of results) {
      out.push(`${fmt(size.referrals)} referrals, ${fmt(size.auditEvents)} audit events`)
      out.push(table(['scenario', 'API req/s', 'p50 ms', 'p99 ms', 'pgbench tps', 'p50 ms', 'p99 ms', 'ratio'],
        size.scenarios.map((r) => [r.title, fmt(r.api.perSecond), r.api.p50, r.api.p99, fmt(r.pgbench.perSecond), r.pgbench.p50, r.pgbench.p99, r.ratio.toFixed(2)])), '')
    }
    const first = results[0]
    const last = results[results.length - 1]
    const growth = first !== undefined && last !== undefined && last !== first
      ? last.scenarios.map((r) => {
        const before = first.scenarios.find((s) => s.key === r.key)
        const times = (a: number | undefined, b: number) => round(b / Math.max(a ?? 0, 0.001))
        return { key: r.key, title: r.title, api: { p50: times(before?.api.p50, r.api.p50), p99: times(before?.api.p99, r.api.p99) }, pgbench: { p50: times(before?.pgbench.p50, r.pgbench.p50), p99: times(before?.pgbench.p99, r.pgbench.p99) } }
      })
      : []
    if (growth.length > 0 && first !== undefined && last !== undefined) {
      out.push(`growth, ${fmt(first.referrals)} → ${fmt(last.referrals)} referrals (${fmt(first.auditEvents)} → ${fmt(last.auditEvents)} audit events); aim: under 1.3×`)
      out.push(table(['scenario', 'API p50', 'API p99', 'pgbench p50', 'pgbench p99'], growth.map((g) => [g.title, `${g.api.p50}×`, `${g.api.p99}×`, `${g.pgbench.p50}×`, `${g.pgbench.p99}×`])), '')
    }
    process.stdout.write(`${out.join('\n')}\n`)
    const output = {
      when: new Date().toISOString(),
      machine: { ...machine, loadAverageAtEnd: loadavg().map((l) => round(l)) },
      postgres: (await db.sql<{ v: string }[]>`select version() as v`)[0]?.v,
      settings: { sizes, maxEvents, seedMinutes, concurrency, seconds },
      sizes: results,
      growth,
      durationSeconds: round((performance.now() - started) / 1000, 0)
    }
    mkdirSync(new URL('results/', import.meta.url), { recursive: true })
    const file = new URL(`results/scale-${Date.now()}.json`, import.meta.url)
    writeFileSync(file, `${JSON.stringify(output, null, 2)}\n`)
    say(`results: ${file.pathname} (${output.durationSeconds} s in all)`)
  } finally {
    await stop()
    await db.drop()
    undo.cancel()
  }
}

/**
 * Audit events `from`…`to`, spread over the referrals, with audit_events' secondary indexes dropped
 * during the insert and rebuilt from their definitions after it. Stops early at `deadline`; resolves
 * to the number of events there are.
 */
async function seedEvents (db: Awaited<ReturnType<typeof createDatabase>>, options: { from: number, to: number, referrals: number, people: { referrerId: string, police: string }, deadline: number }) {
  const indexes = await db.sql<{ name: string, definition: string }[]>`
    select indexname as name, indexdef as definition from pg_indexes
    where schemaname = 'public' and tablename = 'audit_events' and indexname <> 'audit_events_pkey'`
  for (const index of indexes) await db.sql.unsafe(`drop index "${index.name}"`)
  let done = options.from
  const started = performance.now()
  try {
    const batch = 500_000
    while (done < options.to && performance.now() < options.deadline) {
      const count = Math.min(batch, options.to - done)
      await seedAuditEvents(db, { first: done + 1, count, referrals: options.referrals, actorUserId: options.people.referrerId, actorAgencyId: options.people.police })
      done += count
      const rate = (done - options.from) / ((performance.now() - started) / 1000)
      status(`  audit events: ${fmt(done)}/${fmt(options.to)}, ${fmt(rate)}/s, about ${fmt((options.to - done) / rate)} s to go`)
    }
    if (done < options.to) say(`  stopped seeding audit events at ${fmt(done)} of ${fmt(options.to)}: BENCH_SCALE_SEED_MINUTES (${seedMinutes}) reached`)
  } finally {
    await db.sql`set maintenance_work_mem = '512MB'`
    for (const [i, index] of indexes.entries()) {
      status(`  rebuilding audit_events indexes: ${i + 1}/${indexes.length} (${index.name})`)
      await db.sql.unsafe(index.definition)
    }
  }
  return done
}

await runBench(main)
