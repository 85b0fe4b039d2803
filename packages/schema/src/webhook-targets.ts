/**
 * Where a webhook may point. Outside development a target must be https and must not resolve to a
 * loopback, private, link-local or otherwise non-public address (IPv4-mapped IPv6 included). The API
 * checks at registration; the worker checks again at delivery, on the very address it connects to,
 * so a DNS answer that changes in between (rebinding) cannot reach inside the network.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { BlockList, isIP } from 'node:net'

const nonPublic = new BlockList()
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4]
] as const) nonPublic.addSubnet(network, prefix, 'ipv4')
// IPv6 is public only inside global unicast (2000::/3), less the special blocks in it: Teredo and
// other IETF protocol assignments (2001::/23), documentation, 6to4 (which embeds an IPv4 address).
// Everything outside 2000::/3 (::/96 IPv4-compatible, NAT64, ULA, link- and site-local, multicast…)
// is refused by the allow-list.
const globalUnicast = new BlockList()
globalUnicast.addSubnet('2000::', 3, 'ipv6')
for (const [network, prefix] of [['2001::', 23], ['2001:db8::', 32], ['2002::', 16], ['3fff::', 20]] as const) nonPublic.addSubnet(network, prefix, 'ipv6')

/** Whether an address is on the public internet. IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged as its IPv4. */
export function isPublicAddress (address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped?.[1] !== undefined) return isPublicAddress(mapped[1])
  if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/i.test(address)) return false
  const family = isIP(address)
  if (family === 0) return false
  if (family === 6 && !globalUnicast.check(address, 'ipv6')) return false
  return !nonPublic.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/** What is wrong with a webhook URL on its face, or null. DNS is checked separately. */
export function webhookUrlProblem (raw: string, allowPrivate: boolean): string | null {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return 'is not a URL'
  }
  if (url.protocol !== 'https:' && !(allowPrivate && url.protocol === 'http:')) return 'must be an https URL'
  if (url.username !== '' || url.password !== '') return 'must not carry credentials'
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (!allowPrivate && (host === 'localhost' || host.endsWith('.localhost'))) return 'must not point at this machine'
  if (!allowPrivate && isIP(host) !== 0 && !isPublicAddress(host)) return 'must not point at a loopback, private or link-local address'
  return null
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/**
 * A `lookup` for http(s).request that refuses non-public answers: the connection is made to exactly
 * the address that was checked.
 */
export function publicOnlyLookup (allowPrivate: boolean) {
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback) => {
    dnsLookup(hostname, { all: true }, (error, addresses) => {
      if (error !== null) { callback(error, []); return }
      const refused = addresses.find((a) => !allowPrivate && !isPublicAddress(a.address))
      if (refused !== undefined || addresses.length === 0) {
        const denied: NodeJS.ErrnoException = new Error('the webhook host resolves to a non-public address')
        denied.code = 'EHAVENPRIVATE'
        callback(denied, [])
        return
      }
      if (options.all === true) callback(null, addresses)
      else callback(null, addresses[0]?.address ?? '', addresses[0]?.family)
    })
  }
}

/** Resolves a webhook URL's host and checks every address, for registration. Null when fine. */
export async function webhookHostProblem (raw: string, allowPrivate: boolean): Promise<string | null> {
  if (allowPrivate) return null
  const host = new URL(raw).hostname.replace(/^\[|\]$/g, '')
  if (isIP(host) !== 0) return isPublicAddress(host) ? null : 'must not point at a loopback, private or link-local address'
  return await new Promise((resolve) => {
    dnsLookup(host, { all: true }, (error, addresses) => {
      if (error !== null) resolve('has a host name that does not resolve')
      else if (addresses.some((a) => !isPublicAddress(a.address))) resolve('resolves to a loopback, private or link-local address')
      else resolve(null)
    })
  })
}
