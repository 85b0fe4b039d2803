/**
 * A background loop that runs `step` again at once while it reports more work, otherwise after
 * `idleMs` or as soon as `wake()` is called; after an error it waits `errorMs`. A `wake()` that
 * arrives while a step runs is kept and runs the next step at once: the step may have read the
 * table before the commit that woke it (an outbox NOTIFY lost that way waited for the next poll, up
 * to `idleMs`). `stop()` resolves once the step in progress has finished.
 */
export function startLoop (options: { step: () => Promise<boolean>, idleMs: number, errorMs?: number, onError: (error: unknown) => void }) {
  let stopped = false
  let woken = false
  let timer: NodeJS.Timeout | undefined
  let sleeping: (() => void) | undefined
  const sleep = async (ms: number) => await new Promise<void>((resolve) => {
    sleeping = resolve
    timer = setTimeout(resolve, ms)
  })
  const running = (async () => {
    while (!stopped) {
      woken = false
      let more: boolean
      try {
        more = await options.step()
      } catch (error) {
        options.onError(error)
        if (!stopped) await sleep(options.errorMs ?? options.idleMs * 5)
        continue
      }
      if (!more && !woken && !stopped) await sleep(options.idleMs)
    }
  })()
  return {
    wake: () => {
      woken = true
      clearTimeout(timer)
      sleeping?.()
    },
    stop: async () => {
      stopped = true
      clearTimeout(timer)
      sleeping?.()
      await running
    }
  }
}
