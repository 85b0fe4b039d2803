/**
 * The webhook receiver of `pnpm bench:notifications`, in a process of its own as a receiving
 * agency's system is, so that its CPU is counted apart from the worker's. It records each
 * webhook's arrival time and its event's commit time (`occurredAt`), and answers its parent over
 * IPC: `count` (how many so far) and `take` (the records, which it then forgets).
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export type ReceiverRequest = 'count' | 'take'
export type ReceiverMessage = { port: number } | { count: number } | { received: { at: number, occurredAt: number }[] }

let received: { at: number, occurredAt: number }[] = []
const server = createServer((request, response) => {
  let body = ''
  request.on('data', (chunk: Buffer) => { body += chunk.toString() })
  request.on('end', () => {
    received.push({ at: Date.now(), occurredAt: Date.parse((JSON.parse(body) as { occurredAt: string }).occurredAt) })
    response.writeHead(200).end()
  })
})
const send = (message: ReceiverMessage) => { process.send?.(message) }
server.listen(0, '127.0.0.1', () => { send({ port: (server.address() as AddressInfo).port }) })
process.on('message', (request: ReceiverRequest) => {
  if (request === 'count') {
    send({ count: received.length })
  } else {
    send({ received })
    received = []
  }
})
// The parent gone (finished, failed or killed): nothing is left listening.
process.on('disconnect', () => { server.closeAllConnections(); server.close() })
