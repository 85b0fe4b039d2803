/**
 * Ed25519 keys from configuration, or outside production from a file in the data directory that
 * the first process to need it creates. The API's token key and the worker's audit checkpoint key
 * both come through here, so "configured, else generated once and reused" means the same thing
 * everywhere.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto'
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

/** A key that is missing or malformed; the message names the variable to set. */
export class KeyConfigError extends Error {}

export interface Ed25519Key {
  privateKey: KeyObject
  publicKey: KeyObject
  privateKeyPem: string
  publicKeyPem: string
}

/** PEM from an environment variable may carry `\n` escapes instead of line breaks. */
const unescapePem = (pem: string) => pem.replaceAll('\\n', '\n')

export function ed25519FromPem (pem: string, variable: string): Ed25519Key {
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(unescapePem(pem))
  } catch {
    throw new KeyConfigError(`${variable} is not a PEM private key`)
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new KeyConfigError(`${variable} must be an Ed25519 key`)
  const publicKey = createPublicKey(privateKey)
  return {
    privateKey,
    publicKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString()
  }
}

export function ed25519PublicKeyFromPem (pem: string, variable: string): KeyObject {
  let key: KeyObject
  try {
    key = createPublicKey(unescapePem(pem))
  } catch {
    throw new KeyConfigError(`${variable} is not a PEM public key`)
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new KeyConfigError(`${variable} must be an Ed25519 key`)
  return key
}

export interface KeySource {
  /** The configured PEM, if any; it always wins. */
  pem: string | undefined
  /** The environment variable it comes from, named in errors. */
  variable: string
  /** Where a generated key is kept outside production. */
  file: string
  env: 'production' | 'development' | 'test'
}

/**
 * The configured key; else, outside production, the key in `file`, created on first use. Creation
 * is atomic (a private temporary file hard-linked into place), so an API and a worker starting
 * together end up with one key, never two that overwrite each other.
 */
export function loadOrCreateEd25519Key (source: KeySource): Ed25519Key {
  if (source.pem !== undefined) return ed25519FromPem(source.pem, source.variable)
  if (source.env === 'production') throw new KeyConfigError(`${source.variable} is required when NODE_ENV=production`)
  if (!existsSync(source.file)) {
    mkdirSync(dirname(source.file), { recursive: true })
    const temporary = `${source.file}.${randomUUID()}.tmp`
    const pem = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    writeFileSync(temporary, pem, { mode: 0o600 })
    try {
      linkSync(temporary, source.file)
    } catch (error) {
      if ((error as { code?: string }).code !== 'EEXIST') throw error
    } finally {
      unlinkSync(temporary)
    }
  }
  return ed25519FromPem(readFileSync(source.file, 'utf8'), source.file)
}

/**
 * The public half only: the configured public keys; else, outside production, the one derived
 * from the key file if some process has created it (none until then: nothing has been signed yet).
 *
 * The configured PEM may hold several public keys, one block after another: to rotate the audit
 * signing key, list the new public key next to the old ones, then switch the signing key.
 * Checkpoints signed before the switch still verify against the old key, and those after it
 * against the new one. Keep a retired key listed for as long as checkpoints it signed are kept.
 */
export function readEd25519PublicKeys (source: KeySource): KeyObject[] {
  if (source.pem !== undefined) {
    const blocks = unescapePem(source.pem).match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? [source.pem]
    return blocks.map((block) => ed25519PublicKeyFromPem(block, source.variable))
  }
  if (source.env === 'production' || !existsSync(source.file)) return []
  return [ed25519FromPem(readFileSync(source.file, 'utf8'), source.file).publicKey]
}
