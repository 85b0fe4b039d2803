/**
 * `pnpm bench`: each main API scenario under autocannon at a fixed concurrency, next to pgbench
 * running the same SQL statements at the same concurrency, in the same run on the same machine.
 *
 * 1. A fresh database on the PostgreSQL at DATABASE_URL, migrated by the API as it starts; the API and
 *    the worker as separate production processes (scenarios.ts `startStack`).
 * 2. Seeded in SQL: BENCH_REFERRALS referrals (copies of one made through the API), shares accepted
 *    by one agency and pending with another, ten audit events per referral; then the worker's sealer
 *    is given time to seal them, so the run starts in a steady state.
 * 3. Per scenario: its SQL captured from the app's own code and turned into a pgbench script
 *    (harness.ts), a short warm-up, autocannon, then pgbench; memory and CPU sampled throughout.
 * 4. A table on stdout (progress on stderr); everything as JSON in bench/results/.
 *
 * BENCH_CONCURRENCY (10), BENCH_SECONDS (10 a side), BENCH_REFERRALS (10,000), BENCH_ACCEPTS (3,000)
 * change the run; BENCH_ONLY=list,accept runs some scenarios; BENCH_API_NODE_ARGS passes flags to the
 * API process (`--cpu-prof --cpu-prof-dir=/tmp/prof` to profile it).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import {
  cloneReferrals, createDatabase, fmt, idPrefixes, memoryOf, round, runBench, say, seedAuditEvents, seedShares, status, table, undoOnInterrupt
} from './harness.ts'
import { measure, type ScenarioResult, scenarios, seedPeople, startCaptureApp, startStack } from './scenarios.ts'

const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 10)
const seconds = Number(process.env.BENCH_SECONDS ?? 10)
const referralCount = Number(process.env.BENCH_REFERRALS ?? 10_000)
const warmupSeconds = 2
const scopedCount = Math.min(2_000, referralCount)
const accept = { warmup: 200, api: Number(process.env.BENCH_ACCEPTS ?? 3_000), pgbenchPerClient: 0 }
accept.pgbenchPerClient = Math.ceil(accept.api / concurrency)
const pendingCount = 2 + accept.warmup + accept.api + accept.pgbenchPerClient * concurrency
if (pendingCount > referralCount) throw new Error(`BENCH_REFERRALS must be at least ${pendingCount} for ${accept.api} accepts`)
const only = process.env.BENCH_ONLY?.split(',').map((key) => key.trim())
const apiNodeArgs = process.env.BENCH_API_NODE_ARGS?.split(' ').filter((arg) => arg !== '') ?? []

async function main () {
  const started = performance.now()
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, loadAverageAtStart: loadavg().map((l) => round(l)) }
  say(`pnpm bench: ${concurrency} connections/clients, ${seconds} s a side, ${fmt(referralCount)} referrals; ${machine.cpus} CPUs, load average ${machine.loadAverageAtStart.join(' ')}`)
  const db = await createDatabase('haven_bench')
  // The services started later register their own stop (scenarios.ts), undone before this.
  const undo = undoOnInterrupt(db.drop)
  let stop = async () => {}
  try {
    say(`database ${db.name}: starting the API (which migrates it) and the worker, NODE_ENV=production …`)
    const stack = await startStack(db, { worker: true, apiNodeArgs })
    stop = stack.stop
    const people = await seedPeople(db, stack.base)

    const seedStarted = performance.now()
    say(`seeding ${fmt(referralCount)} referrals, ${fmt(scopedCount)} accepted and ${fmt(pendingCount)} pending shares, ${fmt(referralCount * 10)} audit events …`)
    await cloneReferrals(db, people.templateId, 1, referralCount)
    await seedShares(db, { prefix: idPrefixes.scopedShare, from: 1, count: scopedCount, agencyId: people.scopedNgo, createdBy: people.referrerId, status: 'accepted', scopes: ['identity', 'circumstances'], decidedBy: people.scopedCaseworkerId })
    await seedShares(db, { prefix: idPrefixes.pendingShare, from: 1, count: pendingCount, agencyId: people.acceptingNgo, createdBy: people.referrerId, status: 'pending', scopes: ['identity'] })
    await seedAuditEvents(db, { count: referralCount * 10, referrals: referralCount, actorUserId: people.referrerId, actorAgencyId: people.police })
    await db.sql`analyze`
    say(`  seeded in ${round((performance.now() - seedStarted) / 1000, 1)} s; waiting for the worker's sealer to seal them …`)
    for (const deadline = Date.now() + 120_000; Date.now() < deadline;) {
      const [row] = await db.sql<{ unsealed: number }[]>`select ((select count(*) from audit_events) - (select count(*) from audit_seals))::int as unsealed`
      status(`  unsealed audit events: ${fmt(row?.unsealed ?? 0)}`)
      if ((row?.unsealed ?? 0) < 100) break
      await new Promise((resolve) => setTimeout(resolve, 500))
    }

    const capture = await startCaptureApp(db, stack.env)
    const previousStop = stop
    stop = async () => { await capture.close(); await previousStop() }
    const selected = scenarios(people, { referrals: referralCount, scoped: scopedCount, accept }).filter((s) => only === undefined || only.includes(s.key))
    const results: ScenarioResult[] = []
    for (const [index, scenario] of selected.entries()) {
      results.push(await measure({ db, stack, capture, scenario, concurrency, seconds, warmupSeconds, label: `[${index + 1}/${selected.length}] ${scenario.title}` }))
    }

    const peakRssMb = { api: memoryOf(stack.api.pid).peakMb, worker: stack.worker !== undefined ? memoryOf(stack.worker.pid).peakMb : 0 }
    const rows = results.map((r) => [
      r.title, fmt(r.api.perSecond), r.api.p50, r.api.p99, fmt(r.pgbench.perSecond), r.pgbench.p50, r.pgbench.p99, r.ratio.toFixed(2), r.statementsPerRequest,
      `${r.api.cpuPercent.api}%`, `${r.api.backendCpuPercent}%`
    ])
    process.stdout.write([
      '',
      `${concurrency} connections (autocannon) / clients (pgbench), ${seconds} s a side; accept share: ${fmt(accept.api)} requests / ${fmt(accept.pgbenchPerClient * concurrency)} transactions`,
      table(['scenario', 'API req/s', 'p50 ms', 'p99 ms', 'pgbench tps', 'p50 ms', 'p99 ms', 'ratio', 'stmts', 'API CPU', 'PG CPU'], rows),
      '',
      `peak RSS (VmHWM, whole run): API ${peakRssMb.api} MB, worker ${peakRssMb.worker} MB`,
      ''
    ].join('\n'))
    const output = {
      when: new Date().toISOString(),
      machine: { ...machine, loadAverageAtEnd: loadavg().map((l) => round(l)) },
      postgres: (await db.sql<{ v: string }[]>`select version() as v`)[0]?.v,
      settings: { concurrency, seconds, warmupSeconds, referrals: referralCount, scopedShares: scopedCount, pendingShares: pendingCount, auditEvents: referralCount * 10, accept },
      peakRssMb,
      scenarios: results,
      durationSeconds: round((performance.now() - started) / 1000, 0)
    }
    mkdirSync(new URL('results/', import.meta.url), { recursive: true })
    const file = new URL(`results/bench-${Date.now()}.json`, import.meta.url)
    writeFileSync(file, `${JSON.stringify(output, null, 2)}\n`)
    say(`results: ${file.pathname} (${output.durationSeconds} s in all)`)
  } finally {
    await stop()
    await db.drop()
    undo.cancel()
  }
}

await runBench(main)
