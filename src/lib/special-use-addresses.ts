/**
 * Which IP addresses a server-side fetch of a URL chosen by someone else may connect to. The IANA
 * IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates) list the ranges that
 * are not ordinary public unicast: loopback, private, link-local (the cloud metadata endpoint
 * 169.254.169.254), shared CGNAT space, documentation, benchmarking, multicast, reserved. A fetch
 * of an attacker-chosen URL must never reach them (SSRF, RFC 9700 §4.16 spirit).
 *
 * Matching uses `node:net` `BlockList`; addresses that embed an IPv4 address (IPv4-mapped,
 * NAT64, 6to4) are judged by the IPv4 address they lead to.
 */
import { BlockList, isIP } from 'node:net'

/** How an address is classified: public unicast, loopback (allowed only in dev mode), or a special-use range (never). */
export type AddressClass = { kind: 'public' } | { kind: 'loopback' } | { kind: 'special'; range: string }

type Range = [cidr: string, name: string]

/** IANA IPv4 Special-Purpose Address Registry, plus multicast (224/4) and the limited broadcast (in 240/4). */
const IPV4_SPECIAL: Range[] = [
  ['0.0.0.0/8', '"this network" (RFC 791)'],
  ['10.0.0.0/8', 'private-use (RFC 1918)'],
  ['100.64.0.0/10', 'shared address space, CGNAT (RFC 6598)'],
  ['169.254.0.0/16', 'link-local (RFC 3927)'],
  ['172.16.0.0/12', 'private-use (RFC 1918)'],
  ['192.0.0.0/24', 'IETF protocol assignments (RFC 6890)'],
  ['192.0.2.0/24', 'documentation TEST-NET-1 (RFC 5737)'],
  ['192.31.196.0/24', 'AS112-v4 (RFC 7535)'],
  ['192.52.193.0/24', 'AMT (RFC 7450)'],
  ['192.88.99.0/24', 'deprecated 6to4 relay anycast (RFC 7526)'],
  ['192.168.0.0/16', 'private-use (RFC 1918)'],
  ['192.175.48.0/24', 'direct delegation AS112 service (RFC 7534)'],
  ['198.18.0.0/15', 'benchmarking (RFC 2544)'],
  ['198.51.100.0/24', 'documentation TEST-NET-2 (RFC 5737)'],
  ['203.0.113.0/24', 'documentation TEST-NET-3 (RFC 5737)'],
  ['224.0.0.0/4', 'multicast (RFC 5771)'],
  ['240.0.0.0/4', 'reserved, limited broadcast (RFC 1112, RFC 919)'],
]

/**
 * IANA IPv6 Special-Purpose Address Registry ranges inside or beside global unicast. Anything
 * outside 2000::/3 (unique-local fc00::/7, link-local fe80::/10, multicast ff00::/8, ::/128, the
 * discard prefix 100::/64, …) is refused as "not global unicast" after these; they are listed by
 * name so the refusal says which.
 */
const IPV6_SPECIAL: Range[] = [
  ['::/128', 'unspecified address (RFC 4291)'],
  ['::/96', 'IPv4-compatible, deprecated (RFC 4291)'],
  ['64:ff9b:1::/48', 'local-use IPv4/IPv6 translation (RFC 8215)'],
  ['100::/64', 'discard-only (RFC 6666)'],
  ['2001::/23', 'IETF protocol assignments, Teredo (RFC 2928, RFC 4380)'],
  ['2001:db8::/32', 'documentation (RFC 3849)'],
  ['3fff::/20', 'documentation (RFC 9637)'],
  ['5f00::/16', 'SRv6 SIDs (RFC 9602)'],
  ['fc00::/7', 'unique-local (RFC 4193)'],
  ['fe80::/10', 'link-local (RFC 4291)'],
  ['fec0::/10', 'site-local, deprecated (RFC 3879)'],
  ['ff00::/8', 'multicast (RFC 4291)'],
]

function blockLists(ranges: Range[], type: 'ipv4' | 'ipv6'): Array<{ list: BlockList; name: string }> {
  return ranges.map(([cidr, name]) => {
    const [net, prefix] = cidr.split('/') as [string, string]
    const list = new BlockList()
    list.addSubnet(net, Number(prefix), type)
    return { list, name }
  })
}

const V4 = blockLists(IPV4_SPECIAL, 'ipv4')
const V6 = blockLists(IPV6_SPECIAL, 'ipv6')
const LOOPBACK_V4 = blockLists([['127.0.0.0/8', 'loopback (RFC 1122)']], 'ipv4')[0]!.list
const GLOBAL_UNICAST_V6 = blockLists([['2000::/3', 'global unicast']], 'ipv6')[0]!.list

/** The 16 bytes of an IPv6 address (`isIP(a) === 6`, zone id already removed). */
function ipv6Bytes(address: string): number[] {
  let text = address
  const tail: number[] = []
  const lastColon = text.lastIndexOf(':')
  if (text.includes('.', lastColon)) {
    // A trailing dotted quad ("::ffff:10.0.0.1") is the last 32 bits.
    tail.push(...text.slice(lastColon + 1).split('.').map(Number))
    text = text.slice(0, lastColon + 1) + '0:0'
  }
  const [head, rest] = text.includes('::') ? (text.split('::') as [string, string]) : [text, undefined]
  const groups = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)))
  const left = groups(head)
  const right = rest === undefined ? [] : groups(rest)
  const all = rest === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
  const bytes = all.flatMap((g) => [g >> 8, g & 0xff])
  if (tail.length === 4) bytes.splice(12, 4, ...tail)
  return bytes
}

function classifyV4(address: string): AddressClass {
  if (LOOPBACK_V4.check(address, 'ipv4')) return { kind: 'loopback' }
  const hit = V4.find((r) => r.list.check(address, 'ipv4'))
  return hit ? { kind: 'special', range: hit.name } : { kind: 'public' }
}

/** An IPv4 address that an IPv6 one leads to, e.g. through a NAT64 gateway: anything but public is refused. */
function viaTranslation(embedded: string, how: string): AddressClass {
  const inner = classifyV4(embedded)
  if (inner.kind === 'public') return inner
  // Not even loopback: a NAT64 or 6to4 gateway's loopback is not ours, and no dev setup needs it.
  return { kind: 'special', range: `${how} of ${embedded} (${inner.kind === 'special' ? inner.range : 'loopback'})` }
}

/**
 * Classifies an IP address literal. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address
 * itself (a dual-stack socket connects to it); NAT64 (64:ff9b::/96, RFC 6052) and 6to4
 * (2002::/16, RFC 3056) are public only when the IPv4 address they carry is. Not an IP: special.
 */
export function classifyAddress(address: string): AddressClass {
  const family = isIP(address)
  if (family === 4) return classifyV4(address)
  if (family !== 6) return { kind: 'special', range: 'not an IP address' }
  const plain = address.split('%')[0]!
  const b = ipv6Bytes(plain)
  const v4At = (i: number) => b.slice(i, i + 4).join('.')
  const prefixIs = (p: number[]) => p.every((x, i) => b[i] === x)
  if (prefixIs([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])) return classifyV4(v4At(12))
  if (prefixIs([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])) return viaTranslation(v4At(12), 'NAT64 (RFC 6052)')
  if (prefixIs([0x20, 0x02])) return viaTranslation(v4At(2), '6to4 (RFC 3056)')
  if (prefixIs([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) && b[15] === 1) return { kind: 'loopback' }
  const hit = V6.find((r) => r.list.check(plain, 'ipv6'))
  if (hit) return { kind: 'special', range: hit.name }
  if (!GLOBAL_UNICAST_V6.check(plain, 'ipv6')) return { kind: 'special', range: 'not global unicast (outside 2000::/3)' }
  return { kind: 'public' }
}
