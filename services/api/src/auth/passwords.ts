import { hash, verify } from '@node-rs/argon2'

/**
 * argon2id with the library's defaults (19 MiB, 2 passes, 1 lane): the OWASP baseline. The
 * parameters are stored in each hash, so raising them later only affects new hashes.
 */
export const hashPassword = async (password: string): Promise<string> => await hash(password)

/** Hash of a password nobody knows: verified against when the email is unknown, so timing doesn't tell. */
const decoy = hash('haven-decoy-password-never-valid')

export async function verifyPassword (passwordHash: string | undefined, password: string): Promise<boolean> {
  try {
    return await verify(passwordHash ?? await decoy, password) && passwordHash !== undefined
  } catch {
    return false
  }
}
