import { KeyConfigError, loadOrCreateEd25519Key } from '@haven/schema'
import { join } from 'node:path'
import type { ApiConfig } from './config.ts'
import { ConfigError } from './config.ts'

export interface SigningKeys { privateKeyPem: string, publicKeyPem: string }

/**
 * The Ed25519 key that signs access tokens: from HAVEN_JWT_PRIVATE_KEY, or outside production a key
 * kept in the data directory (created on first start, readable by the owner only).
 */
export function loadSigningKeys (config: Pick<ApiConfig, 'jwtPrivateKeyPem' | 'dataDir' | 'env'>): SigningKeys {
  try {
    const key = loadOrCreateEd25519Key({
      pem: config.jwtPrivateKeyPem, variable: 'HAVEN_JWT_PRIVATE_KEY', file: join(config.dataDir, 'jwt-ed25519.pem'), env: config.env
    })
    return { privateKeyPem: key.privateKeyPem, publicKeyPem: key.publicKeyPem }
  } catch (error) {
    if (error instanceof KeyConfigError) throw new ConfigError([error.message])
    throw error
  }
}
