/** The worker's configuration, read once at start; a bad variable stops the process naming it. */
export interface WorkerConfig {
  env: 'production' | 'development' | 'test'
  databaseUrl: string | undefined
  redisUrl: string
  dataDir: string
  logLevel: string
  /** SMTP server for email notifications; unset: the email channel is off (logged at start). */
  smtpUrl: string | undefined
  /** Sender address of notification emails. */
  emailFrom: string
  /** Base of links in notifications. */
  publicUrl: string
  /** Allow http and private/loopback webhook targets (development and tests only). */
  webhookAllowPrivate: boolean
  /** Ed25519 private key (PEM) that signs audit checkpoints; generated into `dataDir` outside production. */
  auditSigningKeyPem: string | undefined
  /** Append-only file sink of signed checkpoints, outside the database. */
  checkpointFile: string
  checkpointIntervalSeconds: number
  checkpointEveryEvents: number
  /** Port of the Prometheus /metrics endpoint (0: off). */
  metricsPort: number
  /** Prefix of every queue key in Redis, so several Havens can share one Redis. */
  queuePrefix: string
  /** How long a job may run before another worker takes it over as stalled (a crashed worker's jobs). */
  jobLockMs: number
  /** Work still pending this long after it was handed to Redis is handed over again (Redis may have lost it). */
  redispatchAfterSeconds: number
  /**
   * Multiplies every queue's retry delays (jobs.ts), fan-out and email too. 1: a webhook's 9 attempts
   * span up to about 4 minutes; 15, up to about an hour, for receivers that go down for longer; tests
   * make it a few seconds.
   */
  retryDelayScale: number
  /**
   * Connections of the worker's PostgreSQL pool. Few: the deliveries share batched statements
   * (webhook.ts), and every new connection is a backend that plans each statement again. A worker
   * started on 1,000 shares delivered about a quarter faster with 3 than with 10 (`pnpm
   * bench:notifications`), its PostgreSQL CPU 40 % lower (a scratch copy; bench/README.md). 2 was
   * faster still, but then a sealer's transaction leaves one connection for all the rest.
   */
  databaseConnections: number
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
  /** A whole number, or with `decimal` one like 0.25, from `min` to `max`. */
  const number = (name: string, fallback: number, min: number, max: number, decimal = false): number => {
    const raw = text(name)
    if (raw === undefined) return fallback
    if (!(decimal ? /^\d+(\.\d+)?$/ : /^\d+$/).test(raw) || Number(raw) < min || Number(raw) > max) {
      problems.push(`${name} must be a ${decimal ? '' : 'whole '}number from ${min} to ${max} (got "${raw}")`)
    }
    return Number(raw)
  }
  const integer = (name: string, fallback: number, min: number, max: number) => number(name, fallback, min, max)
  const smtpUrl = text('SMTP_URL')
  if (smtpUrl !== undefined && !/^smtps?:\/\//.test(smtpUrl)) problems.push('SMTP_URL must be an smtp:// or smtps:// URL')
  const allowPrivate = text('HAVEN_WEBHOOK_ALLOW_PRIVATE')
  if (allowPrivate !== undefined && allowPrivate !== 'true' && allowPrivate !== 'false') problems.push('HAVEN_WEBHOOK_ALLOW_PRIVATE must be "true" or "false"')
  const auditSigningKeyPem = text('HAVEN_AUDIT_SIGNING_KEY')
  if (nodeEnv === 'production') {
    if (auditSigningKeyPem === undefined) problems.push('HAVEN_AUDIT_SIGNING_KEY is required when NODE_ENV=production')
    if (text('HAVEN_PUBLIC_URL') === undefined) problems.push('HAVEN_PUBLIC_URL is required when NODE_ENV=production')
    if (allowPrivate === 'true') problems.push('HAVEN_WEBHOOK_ALLOW_PRIVATE must not be true when NODE_ENV=production')
  }
  const dataDir = text('HAVEN_DATA_DIR') ?? '.haven'
  const settings = {
    smtpUrl,
    emailFrom: text('HAVEN_EMAIL_FROM') ?? 'Haven <no-reply@haven.invalid>',
    publicUrl: text('HAVEN_PUBLIC_URL') ?? `http://127.0.0.1:${text('PORT') ?? '3000'}`,
    webhookAllowPrivate: allowPrivate === 'true',
    auditSigningKeyPem,
    checkpointFile: text('HAVEN_CHECKPOINT_FILE') ?? `${dataDir}/audit-checkpoints.ndjson`,
    checkpointIntervalSeconds: integer('HAVEN_CHECKPOINT_INTERVAL_SECONDS', 60, 1, 86_400),
    checkpointEveryEvents: integer('HAVEN_CHECKPOINT_EVENTS', 10_000, 1, 10_000_000),
    metricsPort: integer('HAVEN_METRICS_PORT', 9464, 0, 65_535),
    queuePrefix: text('HAVEN_QUEUE_PREFIX') ?? 'haven',
    jobLockMs: integer('HAVEN_JOB_LOCK_MS', 30_000, 1_000, 600_000),
    redispatchAfterSeconds: integer('HAVEN_REDISPATCH_AFTER_SECONDS', 30, 1, 3600),
    retryDelayScale: number('HAVEN_RETRY_DELAY_SCALE', 1, 0.01, 100, true),
    databaseConnections: integer('HAVEN_WORKER_DB_CONNECTIONS', 3, 1, 100)
  }
  if (problems.length > 0) throw new WorkerConfigError(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  return {
    env: nodeEnv as WorkerConfig['env'],
    databaseUrl,
    redisUrl,
    dataDir,
    logLevel: text('LOG_LEVEL') ?? (nodeEnv === 'test' ? 'silent' : 'info'),
    ...settings
  }
}
