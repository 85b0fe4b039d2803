import { type AuditContext, type AuditEventInput, type Db, writeAuditEvent } from '@haven/schema'
import type { HttpProblem } from './errors.ts'

/**
 * Records a refused attempt under the attempted action with outcome `denied`, in its own
 * transaction (the refused work has none), and returns the problem to throw.
 */
export async function refuse (db: Db, context: AuditContext, event: Omit<AuditEventInput, 'outcome'>, problem: HttpProblem): Promise<HttpProblem> {
  await writeAuditEvent(db, context, { ...event, outcome: 'denied' })
  return problem
}
