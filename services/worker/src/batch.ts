/**
 * Group commit for a statement that many jobs run at once: calls made while the previous statement
 * is in flight wait and go together in the next one, so a busy worker sends one statement for tens
 * of deliveries and an idle one still sends each at once (after the current I/O callbacks). One
 * statement in flight at a time: two halved the batches and cost more CPU per delivery
 * (`pnpm bench:notifications`). Each caller gets its own result or the statement's error, never
 * before the statement has returned, so a job never finishes ahead of its write.
 */
export function batched<K, R> (run: (keys: K[]) => Promise<R[]>, maxBatch = 500): (key: K) => Promise<R> {
  const waiting: { key: K, resolve: (result: R) => void, reject: (error: unknown) => void }[] = []
  let busy = false
  const flush = async () => {
    while (waiting.length > 0) {
      const batch = waiting.splice(0, maxBatch)
      try {
        const results = await run(batch.map((call) => call.key))
        batch.forEach((call, i) => { call.resolve(results[i] as R) })
      } catch (error) {
        for (const call of batch) call.reject(error)
      }
    }
    busy = false
  }
  return async (key: K) => await new Promise<R>((resolve, reject) => {
    waiting.push({ key, resolve, reject })
    if (!busy) {
      busy = true
      setImmediate(() => { void flush() })
    }
  })
}
