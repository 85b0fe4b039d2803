/**
 * The webhook receiver of `pnpm bench:notifications`, in a process of its own as a receiving
 * agency's system is, so that its CPU is counted apart from the worker's. It records each
 * webhook's arrival time and its event's commit time (`occurredAt`), and answers its parent over
 * IPC: `{ waitFor: n }` as soon as n webhooks have arrived (one wait at a time), and `take` with the
 * records, which it then forgets. It ignores Ctrl-C, which reaches it with the bench's: it ends
 * when its parent does (or kills it), so the bench can still ask it while it cleans up.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'

export type ReceiverRequest = 'take' | { waitFor: number }
export type ReceiverMessage = { port: number } | { count: number } | { received: { at: number, occurredAt: number }[] }

let received: { at: number, occurredAt: number }[] = []
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
    // A body that is not JSON ends this process, and the bench with it (`the receiver exited`).
    received.push({ at: Date.now(), occurredAt: Date.parse((JSON.parse(body) as { occurredAt: string }).occurredAt) })
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
// The parent gone (finished, failed or killed): nothing is left listening.
process.on('disconnect', () => { server.closeAllConnections(); server.close() })
