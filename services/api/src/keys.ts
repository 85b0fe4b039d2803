import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ApiConfig } from './config.ts'
import { ConfigError } from './config.ts'

export interface SigningKeys { privateKeyPem: string, publicKeyPem: string }

function fromPrivateKey (key: KeyObject): SigningKeys {
  return {
    privateKeyPem: key.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString()
  }
}

/**
 * The Ed25519 key that signs access tokens: from HAVEN_JWT_PRIVATE_KEY, or outside production a key
 * kept in the data directory (created on first start, readable by the owner only).
 */
export function loadSigningKeys (config: Pick<ApiConfig, 'jwtPrivateKeyPem' | 'dataDir' | 'env'>): SigningKeys {
  if (config.jwtPrivateKeyPem !== undefined) {
    let key: KeyObject
    try {
      key = createPrivateKey(config.jwtPrivateKeyPem.replaceAll('\\n', '\n'))
    } catch {
      throw new ConfigError(['HAVEN_JWT_PRIVATE_KEY is not a PEM private key'])
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(['HAVEN_JWT_PRIVATE_KEY must be an Ed25519 key'])
    return fromPrivateKey(key)
  }
  if (config.env === 'production') throw new ConfigError(['HAVEN_JWT_PRIVATE_KEY is required when NODE_ENV=production'])
  const file = join(config.dataDir, 'jwt-ed25519.pem')
  if (existsSync(file)) return loadSigningKeys({ ...config, jwtPrivateKeyPem: readFileSync(file, 'utf8') })
  mkdirSync(config.dataDir, { recursive: true })
  const keys = fromPrivateKey(generateKeyPairSync('ed25519').privateKey)
  writeFileSync(file, keys.privateKeyPem, { mode: 0o600 })
  return keys
}
