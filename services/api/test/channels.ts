/**
 * Real peers for the notification channels: an SMTP server (smtp-server) and a webhook receiver
 * (node:http), both on loopback, and a worker started in-process against a test database.
 */
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { loadWorkerConfig, startWorker } from '@haven/worker'
import { SMTPServer } from 'smtp-server'
import type { Test } from 'tap'

export interface ReceivedMail { to: string[], raw: string }

export async function startSmtp (t: Test) {
  const messages: ReceivedMail[] = []
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    onData (stream, session, callback) {
      let raw = ''
      stream.on('data', (chunk: Buffer) => { raw += chunk.toString() })
      stream.on('end', () => {
        messages.push({ to: session.envelope.rcptTo.map((r) => r.address), raw })
        callback()
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.server.address() as AddressInfo).port
  t.teardown(async () => { await new Promise<void>((resolve) => { server.close(() => { resolve() }) }) })
  return { url: `smtp://127.0.0.1:${port}`, messages }
}

export interface ReceivedHook { headers: IncomingMessage['headers'], body: string, at: number }

/** A webhook receiver; `answer` decides each response: a status code, or 'hang' to never answer. */
export async function startReceiver (t: Test, answer: (hook: ReceivedHook) => number | 'hang' = () => 200) {
  const received: ReceivedHook[] = []
  const hanging = new Set<() => void>()
  const server = createServer((request, response) => {
    let body = ''
    request.on('data', (chunk: Buffer) => { body += chunk.toString() })
    request.on('end', () => {
      const hook = { headers: request.headers, body, at: Date.now() }
      received.push(hook)
      const status = answer(hook)
      if (status === 'hang') {
        hanging.add(() => response.destroy())
        return
      }
      response.writeHead(status).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  t.teardown(async () => {
    for (const release of hanging) release()
    server.closeAllConnections()
    await new Promise<void>((resolve) => { server.close(() => { resolve() }) })
  })
  return { url: `http://127.0.0.1:${port}/hooks`, received }
}

/** A worker in this process on `databaseUrl`, with its own queue prefix and a fast sweeper. */
export async function startTestWorker (t: Test, env: Record<string, string>) {
  const config = loadWorkerConfig({
    NODE_ENV: 'test',
    REDIS_URL: process.env.REDIS_URL,
    HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true',
    HAVEN_METRICS_PORT: '0',
    HAVEN_QUEUE_PREFIX: `test-${process.pid}-${Date.now()}`,
    HAVEN_PUBLIC_URL: 'https://haven.example.org',
    ...env
  })
  const worker = await startWorker(config, { sweepEveryMs: 200 })
  t.teardown(async () => { await worker.close() })
  return worker
}
