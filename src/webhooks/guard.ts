// SSRF guard for callbacks: only http(s), and never an address inside our own network.
//
// The check runs on the address the socket will actually connect to (a `lookup` hook), so a name that
// resolves to a private address — or re-resolves to one after a first, public answer — is refused too.
import dns from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';

export class RefusedError extends Error {
  override name = 'RefusedError';
  readonly code = 'webhook_refused';
}

const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, including the cloud metadata service 169.254.169.254
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  blocked.addSubnet(net, bits, 'ipv4');
}
// An IPv4-mapped address (::ffff:a.b.c.d, in any spelling) is judged by BlockList against the IPv4 rules above.
// Every other IPv6 form that carries an IPv4 address is refused whole: it can reach the same private targets.
for (const [net, bits] of [
  ['::', 96], // IPv4-compatible (deprecated), including the unspecified address :: and loopback ::1
  ['::ffff:0:0:0', 96], // IPv4-translated (RFC 2765)
  ['64:ff9b::', 96], // NAT64 (RFC 6052)
  ['64:ff9b:1::', 48], // NAT64, local use (RFC 8215)
  ['100::', 64], // discard
  ['2001::', 32], // Teredo: carries its server's and client's IPv4 addresses
  ['2001:db8::', 32], // documentation
  ['2002::', 16], // 6to4: 2002:AABB:CCDD::/48 is the IPv4 address AA.BB.CC.DD
  ['fc00::', 7], // unique local, including fd00:ec2::254 (AWS metadata over IPv6)
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  blocked.addSubnet(net, bits, 'ipv6');
}

/** An IPv6 literal as a URL's host spells it, `[::1]`, without its brackets. */
const unbracket = (host: string) => host.replace(/^\[|\]$/g, '');

/** True for loopback, private, link-local, metadata, multicast and reserved addresses. */
export function isForbiddenAddress(address: string): boolean {
  const ip = unbracket(address);
  const family = isIP(ip);
  if (family === 4) return blocked.check(ip, 'ipv4');
  if (family === 6) return blocked.check(ip, 'ipv6');
  return true; // not an address at all
}

export interface GuardPolicy {
  /** WEBHOOK_ALLOW_PRIVATE: every address allowed (development, tests). */
  allowPrivate: boolean;
  /** Exceptions to the refusal, e.g. a test that allows loopback while still refusing metadata. */
  allow?: (address: string) => boolean;
}

function refused(policy: GuardPolicy, address: string): boolean {
  return !policy.allowPrivate && isForbiddenAddress(address) && !policy.allow?.(address);
}

/** Checks what can be checked before connecting: the scheme, and a host that is an address literal. */
export function checkUrl(raw: string, policy: GuardPolicy): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new RefusedError(`not a URL: ${raw.slice(0, 200)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new RefusedError(`only http and https callbacks are allowed, not ${url.protocol}`);
  if (url.username || url.password) throw new RefusedError('callback URLs must not carry credentials');
  const host = unbracket(url.hostname);
  if (isIP(host) && refused(policy, host))
    throw new RefusedError(`refused: ${host} is a private, loopback, link-local or reserved address`);
  return url;
}

/** A `lookup` for http.request that refuses names resolving to a forbidden address (any of them). */
export function guardedLookup(policy: GuardPolicy): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 4);
      const list = addresses as dns.LookupAddress[];
      const bad = list.find((a) => refused(policy, a.address));
      if (bad)
        return callback(
          new RefusedError(
            `refused: ${hostname} resolves to ${bad.address}, a private, loopback, link-local or reserved address`,
          ),
          '',
          4,
        );
      if (options.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
      callback(null, list[0].address, list[0].family);
    });
  };
}
