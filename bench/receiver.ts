/**
 * The webhook receiver of `pnpm bench:notifications`, in a process of its own as a receiving
 * agency's system is, so that its CPU is counted apart from the worker's. Like a receiver should, it
 * dedupes by `Haven-Event-Id`: it records each event's first arrival (its time, and the event's
 * commit time `occurredAt`) and ignores any later one, however many rounds later. It answers its
 * parent over IPC: `{ waitFor: n }` as soon as n events have arrived since the last take (one wait
 * at a time), and `take` with their records, which it then forgets. It ignores Ctrl-C and SIGTERM,
 * which reach it with the bench's process group: the bench may still ask it something before it
 * stops at its next step, and it ends when the bench does (or kills it).
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export type ReceiverRequest = 'take' | { waitFor: number }
export type ReceiverMessage = { port: number } | { count: number } | { received: { at: number, occurredAt: number }[] }

let received: { at: number, occurredAt: number }[] = []
const seen = new Set<string>()
let waitingFor: number | undefined
const send = (message: ReceiverMessage) => { process.send?.(message) }
const answerWait = () => {
  if (waitingFor === undefined || received.length < waitingFor) return
  waitingFor = undefined
  send({ count: received.length })
}
const server = createServer((request, response) => {
  let body = ''
  request.on('data', (chunk: Buffer) => { body += chunk.toString() })
  request.on('end', () => {
    const at = Date.now()
    const eventId = String(request.headers['haven-event-id'])
    if (!seen.has(eventId)) {
      seen.add(eventId)
      // A body that is not JSON ends this process, and the bench with it (`the receiver exited`).
      received.push({ at, occurredAt: Date.parse((JSON.parse(body) as { occurredAt: string }).occurredAt) })
    }
    response.writeHead(200).end()
    answerWait()
  })
})
server.listen(0, '127.0.0.1', () => { send({ port: (server.address() as AddressInfo).port }) })
process.on('message', (request: ReceiverRequest) => {
  if (request === 'take') {
    send({ received })
    received = []
  } else {
    waitingFor = request.waitFor
    answerWait()
  }
})
process.on('SIGINT', () => {})
process.on('SIGTERM', () => {})
// The parent gone (finished, failed or killed): nothing is left listening.
process.on('disconnect', () => { server.closeAllConnections(); server.close() })
