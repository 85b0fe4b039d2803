/**
 * Notification work in hand in this process, for the audit sealer to give way to: jobs running,
 * and for `graceMs` after any work ends or the relay hands messages over (the gap between one job
 * and the next, or between a relay claim and the fan-out job it made). Counted as busy for
 * `graceMs` from the start too, while a worker's first relay claim is usually still in flight.
 */
export function workInHand (graceMs = 100, now = () => Date.now()) {
  let running = 0
  let last = now()
  return {
    async track<T> (work: () => Promise<T>): Promise<T> {
      running++
      try {
        return await work()
      } finally {
        running--
        last = now()
      }
    },
    /** Work was done outside `track` (the relay handed messages over). */
    done () { last = now() },
    busy: () => running > 0 || now() - last < graceMs
  }
}
