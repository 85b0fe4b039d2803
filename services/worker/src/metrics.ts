/**
 * Prometheus metrics of the worker on its own port (HAVEN_METRICS_PORT): queue depth, outbox lag,
 * delivery latency (commit of the event to the receiver's 2xx) and delivery outcomes.
 */
import { createServer, type Server } from 'node:http'
import { type Database, rowsOf } from '@haven/schema'
import { sql } from 'drizzle-orm'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { Queues } from './queues.ts'

export type Metrics = ReturnType<typeof createMetrics>

export function createMetrics (deps: { database: Database, queues: Queues }) {
  const registry = new Registry()
  new Gauge({
    name: 'haven_queue_depth',
    help: 'Jobs waiting, delayed or running, per queue',
    labelNames: ['queue'],
    registers: [registry],
    async collect () {
      const depths = await deps.queues.depths().catch(() => ({}))
      for (const [queue, depth] of Object.entries(depths)) this.set({ queue }, depth)
    }
  })
  new Gauge({
    name: 'haven_outbox_lag_seconds',
    help: 'Age of the oldest outbox message not yet fanned out (0 when none)',
    registers: [registry],
    async collect () {
      const [row] = await rowsOf<{ lag: number | null }>(deps.database.db,
        sql`select extract(epoch from now() - min(created_at))::float8 as lag from outbox where processed_at is null`)
      this.set(Number(row?.lag ?? 0))
    }
  })
  const deliveries = new Counter({ name: 'haven_deliveries_total', help: 'Deliveries by channel and result', labelNames: ['channel', 'result'], registers: [registry] })
  const latency = new Histogram({
    name: 'haven_delivery_latency_seconds',
    help: 'From the event\'s commit to its delivery',
    labelNames: ['channel'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
    registers: [registry]
  })
  return {
    registry,
    delivered: (channel: string, latencyMs?: number) => {
      deliveries.inc({ channel, result: 'delivered' })
      if (latencyMs !== undefined) latency.observe({ channel }, latencyMs / 1000)
    },
    failed: (channel: string) => { deliveries.inc({ channel, result: 'failed' }) }
  }
}

/** Serves /metrics; resolves once listening. Port 0 picks a free one (tests). */
export async function serveMetrics (metrics: Metrics, port: number, host = '127.0.0.1'): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.url !== '/metrics') {
      response.writeHead(404).end()
      return
    }
    metrics.registry.metrics().then((text) => {
      response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text)
    }, () => { response.writeHead(500).end() })
  })
  await new Promise<void>((resolve) => server.listen(port, host, resolve))
  return server
}
