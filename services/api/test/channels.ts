/**
 * Real peers for the notification channels: an SMTP server (smtp-server) and a webhook receiver
 * (node:http), both on loopback, and a worker started in-process against a test database.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer, type IncomingMessage } from 'node:http'
import { type AddressInfo, connect, createServer as createNetServer } from 'node:net'
import { loadWorkerConfig, removeQueues, startWorker } from '@haven/worker'
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

/**
 * A webhook receiver; `answer` decides each response: a status code, `{ status, afterMs, headers }`
 * to answer late (or with headers), a promise of a status to answer when the test says, or 'hang'
 * to never answer.
 */
export async function startReceiver (t: Test, answer: (hook: ReceivedHook) => number | 'hang' | Promise<number> | { status: number, afterMs: number, headers?: Record<string, string> } = () => 200) {
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
      if (typeof status === 'number') response.writeHead(status).end()
      else if (status instanceof Promise) void status.then((code) => { response.writeHead(code).end() })
      else setTimeout(() => { response.writeHead(status.status, status.headers).end() }, status.afterMs)
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

/** A directory for a worker's data (the sealer's checkpoint key and file sink), removed by `remove`. */
function workerDataDir () {
  const path = mkdtempSync(join(tmpdir(), 'haven-worker-'))
  return { path, remove: () => { rmSync(path, { recursive: true, force: true }) } }
}

/** A worker in this process on `databaseUrl`, with its own queue prefix and a fast sweeper. */
export async function startTestWorker (t: Test, env: Record<string, string>) {
  const dataDir = workerDataDir()
  t.teardown(dataDir.remove)
  const config = loadWorkerConfig({
    NODE_ENV: 'test',
    REDIS_URL: process.env.REDIS_URL,
    HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true',
    HAVEN_METRICS_PORT: '0',
    HAVEN_QUEUE_PREFIX: `test-${process.pid}-${Date.now()}`,
    HAVEN_PUBLIC_URL: 'https://haven.example.org',
    HAVEN_DATA_DIR: dataDir.path,
    ...env
  })
  const worker = await startWorker(config, { sweepEveryMs: 200 })
  t.teardown(async () => {
    await worker.close()
    // Its queues, which would otherwise stay in the Redis it used (the machine's, for most tests).
    await removeQueues(config.redisUrl, config.queuePrefix)
  })
  return worker
}

export const freePort = async () => await new Promise<number>((resolve) => {
  const server = createNetServer().listen(0, '127.0.0.1', () => {
    const address = server.address()
    server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
  })
})

/**
 * A redis-server of the test's own on a spare loopback port, which the test may stop and start
 * again: the machine's shared Redis is never touched.
 */
export async function ownRedis (t: Test) {
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    const deadline = Date.now() + 10_000
    for (;;) {
      const up = await new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true) })
        socket.on('error', () => { resolve(false) })
      })
      if (up) return
      if (Date.now() > deadline) throw new Error('redis-server did not start')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
  const stop = async () => {
    const running = child
    if (running === undefined || running.exitCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }
  await start()
  t.teardown(stop)
  return { url: `redis://127.0.0.1:${port}`, start, stop }
}

/** A worker as its own process (node main.ts), to be killed as a real process is. Its data directory goes when it exits. */
export function spawnWorker (env: Record<string, string>) {
  const root = new URL('../../../', import.meta.url).pathname
  const dataDir = workerDataDir()
  const child = spawn(process.execPath, ['--import', 'tsx', 'services/worker/src/main.ts'], {
    cwd: root,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      HAVEN_WEBHOOK_ALLOW_PRIVATE: 'true',
      HAVEN_METRICS_PORT: '0',
      HAVEN_PUBLIC_URL: 'https://haven.example.org',
      HAVEN_DATA_DIR: dataDir.path,
      LOG_LEVEL: 'warn',
      ...env
    },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  child.once('exit', dataDir.remove)
  return child
}
