/**
 * Root `pnpm test`: makes a fresh database on the PostgreSQL at DATABASE_URL (default: the local
 * server), migrates it, runs every tap test against it and the Redis at REDIS_URL, drops it, and
 * ends with one line `tests: N passed, N failed`. Extra arguments go to tap (e.g. a test file).
 */
import { spawn } from 'node:child_process'
import { openDatabase } from '@haven/schema'
import postgres from 'postgres'

const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const testDatabase = `haven_test_${Date.now()}_${process.pid}`
const testUrl = new URL(serverUrl)
testUrl.pathname = `/${testDatabase}`

const admin = postgres(serverUrl, { max: 1, onnotice: () => {} })
await admin.unsafe(`create database "${testDatabase}"`)
const database = await openDatabase({ url: testUrl.toString(), max: 1 })
await database.migrate()
await database.close()

const child = spawn('tap', ['-R', 'terse', ...process.argv.slice(2)], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: {
    ...process.env,
    NODE_ENV: 'test',
    DATABASE_URL: testUrl.toString(),
    HAVEN_TEST_SERVER_URL: serverUrl,
    REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  }
})
let output = ''
child.stdout.on('data', (chunk: Buffer) => {
  output += chunk.toString()
  process.stdout.write(chunk)
})
const code = await new Promise<number>((resolve) => { child.on('close', (c) => { resolve(c ?? 1) }) })

if (process.env.HAVEN_TEST_KEEP_DB === undefined) await admin.unsafe(`drop database if exists "${testDatabase}" with (force)`)
await admin.end()

// tap's terse summary, redrawn as it runs; the last one is final: "Asserts:  N pass  N fail  …".
// eslint-disable-next-line no-control-regex
const plain = output.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '')
const count = (label: string, kind: string) =>
  Number([...plain.matchAll(new RegExp(`${label}:[^\\n]*?(\\d+) ${kind}`, 'g'))].at(-1)?.[1] ?? 0)
const passed = count('Asserts', 'pass')
const failed = Math.max(count('Asserts', 'fail'), count('Suites', 'fail'), code !== 0 && passed === 0 ? 1 : 0)
const skipped = count('Asserts', 'skip')
process.stdout.write(`tests: ${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}\n`)
process.exit(code)
