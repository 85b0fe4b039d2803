/** The worker's configuration, read once at start; a bad variable stops the process naming it. */
export interface WorkerConfig {
  env: 'production' | 'development' | 'test'
  databaseUrl: string | undefined
  redisUrl: string
  dataDir: string
  logLevel: string
}

export class WorkerConfigError extends Error {}

export function loadWorkerConfig (env: Record<string, string | undefined> = process.env): WorkerConfig {
  const text = (name: string) => {
    const value = env[name]?.trim()
    return value === undefined || value === '' ? undefined : value
  }
  const problems: string[] = []
  const nodeEnv = text('NODE_ENV') ?? 'development'
  if (!['production', 'development', 'test'].includes(nodeEnv)) problems.push(`NODE_ENV must be production, development or test (got "${nodeEnv}")`)
  const databaseUrl = text('DATABASE_URL')
  const redisUrl = text('REDIS_URL') ?? 'redis://127.0.0.1:6379'
  for (const [name, value, protocols] of [['DATABASE_URL', databaseUrl, ['postgres:', 'postgresql:']], ['REDIS_URL', redisUrl, ['redis:', 'rediss:']]] as const) {
    if (value === undefined) continue
    try {
      if (!(protocols as readonly string[]).includes(new URL(value).protocol)) problems.push(`${name} must be a ${protocols.join(' or ')} URL`)
    } catch {
      problems.push(`${name} is not a valid URL`)
    }
  }
  if (nodeEnv === 'production' && databaseUrl === undefined) problems.push('DATABASE_URL is required when NODE_ENV=production')
  if (problems.length > 0) throw new WorkerConfigError(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  return {
    env: nodeEnv as WorkerConfig['env'],
    databaseUrl,
    redisUrl,
    dataDir: text('HAVEN_DATA_DIR') ?? '.haven',
    logLevel: text('LOG_LEVEL') ?? (nodeEnv === 'test' ? 'silent' : 'info')
  }
}
