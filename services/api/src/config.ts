/**
 * The API's configuration, read from the environment once at start and validated. A bad or missing
 * variable stops the process with a message naming it (see server.ts).
 */
import { isIP } from 'node:net'

export interface ApiConfig {
  env: 'production' | 'development' | 'test'
  port: number
  host: string
  /** Unset: embedded PGlite under `dataDir` (one process only: `pnpm start`). */
  databaseUrl: string | undefined
  redisUrl: string
  dataDir: string
  publicUrl: string
  /** Ed25519 private key (PEM) that signs access tokens; generated into `dataDir` outside production. */
  jwtPrivateKeyPem: string | undefined
  bootstrapAdminEmail: string | undefined
  bootstrapAdminPassword: string | undefined
  rateLimitUserPerMin: number
  rateLimitIpPerMin: number
  corsOrigins: string[]
  /**
   * Which peers may set the client address through X-Forwarded-For: none (false) or the proxies at
   * these addresses/CIDRs. Never "anyone": the address is what sign-in throttling and the audit
   * trail record.
   */
  trustProxy: false | string[]
  logLevel: string
  /** Allow http and private/loopback webhook targets (development and tests only). */
  webhookAllowPrivate: boolean
  /** Ed25519 public key (PEM) that checkpoints must verify against; outside production, derived from the data dir's audit key. */
  auditPublicKeyPem: string | undefined
  /** The append-only file sink of signed checkpoints, outside the database. */
  checkpointFile: string
}

export class ConfigError extends Error {
  constructor (readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
  }
}

type Env = Record<string, string | undefined>

/** proxy-addr's names for address ranges, accepted in HAVEN_TRUST_PROXY's list. */
const proxyRangeNames = ['loopback', 'linklocal', 'uniquelocal']

function isAddressOrCidr (entry: string): boolean {
  if (proxyRangeNames.includes(entry)) return true
  const [address = '', prefix, ...rest] = entry.split('/')
  const family = isIP(address)
  if (family === 0 || rest.length > 0) return false
  return prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128))
}

/** Reads and checks every variable, reporting all the bad ones at once. */
export function loadConfig (env: Env = process.env): ApiConfig {
  const problems: string[] = []
  const text = (name: string): string | undefined => {
    const value = env[name]?.trim()
    return value === undefined || value === '' ? undefined : value
  }
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const raw = text(name)
    if (raw === undefined) return fallback
    const value = Number(raw)
    if (!/^\d+$/.test(raw) || value < min || value > max) {
      problems.push(`${name} must be a whole number from ${min} to ${max} (got "${raw}")`)
      return fallback
    }
    return value
  }
  const boolean = (name: string): boolean => {
    const raw = text(name)
    if (raw === undefined) return false
    if (raw !== 'true' && raw !== 'false') problems.push(`${name} must be "true" or "false" (got "${raw}")`)
    return raw === 'true'
  }
  /**
   * `false`, or the addresses of the proxies in front of Haven. `true` (trust whoever connects) is
   * refused, and so is a hop count: it trusts the nearest peers whoever they are, so a client that
   * reaches Haven directly still picks its address (fastify 5.12 ignores hop counts for that reason).
   */
  const trustProxy = (name: string): ApiConfig['trustProxy'] => {
    const raw = text(name)
    if (raw === undefined || raw === 'false') return false
    const instead = 'list the addresses or CIDRs of the proxies in front of Haven (e.g. 10.0.0.5,10.1.0.0/16)'
    if (raw === 'true') {
      problems.push(`${name}=true would let any client choose the address that sign-in throttling and the audit trail record: ${instead}`)
      return false
    }
    if (/^\d+$/.test(raw)) {
      problems.push(`${name}: a hop count ("${raw}") trusts whoever connects when the proxy is bypassed: ${instead}`)
      return false
    }
    const entries = raw.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
    for (const entry of entries) {
      if (!isAddressOrCidr(entry)) problems.push(`${name}: "${entry}" is not an IP address, a CIDR or one of ${proxyRangeNames.join(', ')}`)
    }
    return entries
  }
  const url = (name: string, fallback: string | undefined, protocols: string[]): string | undefined => {
    const raw = text(name) ?? fallback
    if (raw === undefined) return undefined
    try {
      const parsed = new URL(raw)
      if (!protocols.includes(parsed.protocol)) problems.push(`${name} must be a ${protocols.join(' or ')} URL`)
    } catch {
      problems.push(`${name} is not a valid URL`)
    }
    return raw
  }

  const nodeEnv = text('NODE_ENV') ?? 'development'
  if (!['production', 'development', 'test'].includes(nodeEnv)) {
    problems.push(`NODE_ENV must be production, development or test (got "${nodeEnv}")`)
  }
  const production = nodeEnv === 'production'
  const port = integer('PORT', 3000, 0, 65535)
  const config: ApiConfig = {
    env: nodeEnv as ApiConfig['env'],
    port,
    host: text('HOST') ?? '127.0.0.1',
    databaseUrl: url('DATABASE_URL', undefined, ['postgres:', 'postgresql:']),
    redisUrl: url('REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']) ?? 'redis://127.0.0.1:6379',
    dataDir: text('HAVEN_DATA_DIR') ?? '.haven',
    publicUrl: url('HAVEN_PUBLIC_URL', `http://127.0.0.1:${port}`, ['http:', 'https:']) ?? '',
    jwtPrivateKeyPem: text('HAVEN_JWT_PRIVATE_KEY'),
    bootstrapAdminEmail: text('HAVEN_BOOTSTRAP_ADMIN_EMAIL'),
    bootstrapAdminPassword: text('HAVEN_BOOTSTRAP_ADMIN_PASSWORD'),
    rateLimitUserPerMin: integer('HAVEN_RATE_LIMIT_USER_PER_MIN', 600, 1, 1_000_000),
    rateLimitIpPerMin: integer('HAVEN_RATE_LIMIT_IP_PER_MIN', 120, 1, 1_000_000),
    corsOrigins: (text('HAVEN_CORS_ORIGINS') ?? '').split(',').map((o) => o.trim()).filter((o) => o !== ''),
    trustProxy: trustProxy('HAVEN_TRUST_PROXY'),
    logLevel: text('LOG_LEVEL') ?? (nodeEnv === 'test' ? 'silent' : 'info'),
    webhookAllowPrivate: boolean('HAVEN_WEBHOOK_ALLOW_PRIVATE'),
    auditPublicKeyPem: text('HAVEN_AUDIT_PUBLIC_KEY'),
    checkpointFile: text('HAVEN_CHECKPOINT_FILE') ?? `${text('HAVEN_DATA_DIR') ?? '.haven'}/audit-checkpoints.ndjson`
  }
  if (config.bootstrapAdminPassword !== undefined && config.bootstrapAdminPassword.length < 12) {
    problems.push('HAVEN_BOOTSTRAP_ADMIN_PASSWORD must be at least 12 characters')
  }
  if ((config.bootstrapAdminEmail === undefined) !== (config.bootstrapAdminPassword === undefined)) {
    problems.push('HAVEN_BOOTSTRAP_ADMIN_EMAIL and HAVEN_BOOTSTRAP_ADMIN_PASSWORD must be set together')
  }
  for (const origin of config.corsOrigins) {
    if (!/^https?:\/\/[^/]+$/.test(origin)) problems.push(`HAVEN_CORS_ORIGINS: "${origin}" is not an origin like https://app.example.org`)
  }
  if (production) {
    // In production nothing secret is generated: the service refuses to start without it.
    if (config.databaseUrl === undefined) problems.push('DATABASE_URL is required when NODE_ENV=production')
    if (config.jwtPrivateKeyPem === undefined) problems.push('HAVEN_JWT_PRIVATE_KEY is required when NODE_ENV=production')
    if (text('HAVEN_PUBLIC_URL') === undefined) problems.push('HAVEN_PUBLIC_URL is required when NODE_ENV=production')
    if (config.auditPublicKeyPem === undefined) problems.push('HAVEN_AUDIT_PUBLIC_KEY is required when NODE_ENV=production')
    if (config.webhookAllowPrivate) problems.push('HAVEN_WEBHOOK_ALLOW_PRIVATE must not be true when NODE_ENV=production')
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}
