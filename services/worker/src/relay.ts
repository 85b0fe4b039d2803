/**
 * The outbox relay: hands committed outbox messages to the fan-out queue. It claims a batch with
 * FOR UPDATE SKIP LOCKED (several workers share the work without doing it twice), stamping
 * `relayed_at`, then adds fan-out jobs of up to 50 messages in one round trip, each id derived from
 * its message ids (a re-run after a crash adds nothing new). A message not processed in time after it was relayed is handed
 * over again — Redis may have lost it — and the job id again makes that harmless. It wakes on the
 * outbox NOTIFY and polls every second besides.
 */
import { type Database, outbox, rowsOf } from '@haven/schema'
import { inArray, sql } from 'drizzle-orm'
import type { Logger } from 'pino'
import { startLoop } from './loop.ts'
import type { Queues } from './queues.ts'

const batchSize = 200

export async function relayOutbox (database: Database, queues: Queues, redispatchAfterSeconds = 30): Promise<number> {
  // Claimed and stamped in one short statement, then handed to Redis outside any transaction: a
  // Redis that hangs must not hold a transaction open (it would hold back the audit sealer's horizon).
  // In outbox order (RETURNING has none of its own), so the same set of messages claimed again makes
  // the same jobs. Another set (new messages among them, or a claim split between two relays) makes
  // other jobs, which find the messages already processed.
  const rows = await rowsOf<{ id: string }>(database.db, sql`
    with claimed as (
      update outbox set relayed_at = now()
      where id in (
        select id from outbox
        where processed_at is null and (relayed_at is null or relayed_at < now() - make_interval(secs => ${redispatchAfterSeconds}))
        order by seq limit ${batchSize}
        for update skip locked)
      returning id, seq)
    select id from claimed order by seq`)
  if (rows.length === 0) return 0
  try {
    await queues.addFanout(rows.map((row) => row.id))
  } catch (error) {
    // Not handed over: make them due again at once rather than after the redispatch delay.
    await database.db.update(outbox).set({ relayedAt: null }).where(inArray(outbox.id, rows.map((row) => row.id))).catch(() => {})
    throw error
  }
  return rows.length
}

export async function startRelay (deps: { database: Database, queues: Queues, log: Logger, redispatchAfterSeconds: number, onRelayed?: () => void }) {
  let failing = false
  const loop = startLoop({
    idleMs: 1000,
    errorMs: 2000,
    step: async () => {
      const relayed = await relayOutbox(deps.database, deps.queues, deps.redispatchAfterSeconds)
      if (relayed > 0) deps.onRelayed?.()
      if (failing) deps.log.info('outbox relay is working again')
      failing = false
      return relayed === batchSize
    },
    onError: (error) => {
      if (!failing) deps.log.warn({ err: error }, 'outbox relay cannot hand messages to Redis; they wait in the outbox')
      failing = true
    }
  })
  const unlisten = await deps.database.listen('haven_outbox', loop.wake).catch((error: unknown) => {
    deps.log.warn({ err: error }, 'cannot LISTEN for outbox inserts; polling only')
    return async () => {}
  })
  return {
    stop: async () => {
      await unlisten()
      await loop.stop()
    }
  }
}
