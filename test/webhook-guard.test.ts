// The SSRF guard's decisions, in process: every blocked range by real addresses at its edges and the public
// addresses just outside, every URL refusal, and the DNS hook with real lookups (a name, a failing name).
// test/webhook-ssrf.test.ts checks the same guard end to end (sockets, redirects, the webhook worker).
import type { LookupAddress, LookupOptions } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { checkUrl, guardedLookup, isForbiddenAddress, RefusedError, type GuardPolicy } from '../src/webhooks/guard.js';

const strict: GuardPolicy = { allowPrivate: false };

// Each blocked range with addresses inside it (its first and last where they differ from a neighbour's), and the
// public addresses right next to it, which must stay reachable.
const ranges: [range: string, inside: string[], outside: string[]][] = [
  ['0.0.0.0/8', ['0.0.0.0', '0.255.255.255'], ['1.0.0.1']],
  ['10.0.0.0/8', ['10.0.0.0', '10.255.255.255'], ['9.255.255.255', '11.0.0.0']],
  ['100.64.0.0/10', ['100.64.0.0', '100.127.255.255'], ['100.63.255.255', '100.128.0.0']],
  ['127.0.0.0/8', ['127.0.0.1', '127.255.255.255'], ['126.255.255.255', '128.0.0.0']],
  ['169.254.0.0/16', ['169.254.169.254', '169.254.0.0'], ['169.253.255.255', '169.255.0.0']],
  ['172.16.0.0/12', ['172.16.0.0', '172.31.255.255'], ['172.15.255.255', '172.32.0.0']],
  ['192.0.0.0/24', ['192.0.0.0', '192.0.0.255'], ['191.255.255.255', '192.0.1.0']],
  ['192.0.2.0/24', ['192.0.2.0', '192.0.2.255'], ['192.0.3.0']],
  ['192.168.0.0/16', ['192.168.0.0', '192.168.255.255'], ['192.167.255.255', '192.169.0.0']],
  ['198.18.0.0/15', ['198.18.0.0', '198.19.255.255'], ['198.17.255.255', '198.20.0.0']],
  ['198.51.100.0/24', ['198.51.100.0', '198.51.100.255'], ['198.51.99.255', '198.51.101.0']],
  ['203.0.113.0/24', ['203.0.113.0', '203.0.113.255'], ['203.0.112.255', '203.0.114.0']],
  ['224.0.0.0/4', ['224.0.0.0', '239.255.255.255'], ['223.255.255.255']],
  ['240.0.0.0/4', ['240.0.0.0', '255.255.255.255'], []],
  // IPv4-compatible (deprecated), including the unspecified address and loopback.
  ['::/96', ['::', '::1', '::7f00:1', '::127.0.0.1', '::808:808'], []],
  // IPv4-mapped: the IPv4 address inside is judged, in every spelling.
  [
    '::ffff:0:0/96',
    ['::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '::FFFF:A9FE:A9FE', '::ffff:10.1.2.3'],
    ['::ffff:8.8.8.8', '::ffff:808:808', '0:0:0:0:0:ffff:5db8:d822'],
  ],
  // IPv4-translated (RFC 2765): an IPv4 address in disguise.
  ['::ffff:0:0:0/96', ['::ffff:0:7f00:1', '::ffff:0:808:808', '0:0:0:0:ffff:0:a9fe:a9fe'], []],
  ['64:ff9b::/96', ['64:ff9b::7f00:1', '64:ff9b::8.8.8.8'], []],
  ['64:ff9b:1::/48', ['64:ff9b:1::7f00:1', '64:ff9b:1:ffff:ffff:ffff:ffff:ffff'], []],
  ['100::/64', ['100::1', '100::ffff:ffff:ffff:ffff'], []],
  // Teredo: the IPv4 server and (obfuscated) client addresses are inside.
  ['2001::/32', ['2001:0:4136:e378:8000:63bf:3fff:fdd2', '2001::ffff'], ['2001:1::1']],
  ['2001:db8::/32', ['2001:db8::1', '2001:db8:ffff::1'], ['2001:db7:ffff::1', '2001:db9::1']],
  // 6to4: 2002:AABB:CCDD::/48 is the IPv4 address AA.BB.CC.DD.
  ['2002::/16', ['2002:7f00:1::1', '2002:a9fe:a9fe::1', '2002:808:808::1'], ['2003::1', '2001:4860:4860::8888']],
  ['fc00::/7', ['fc00::1', 'fd00:ec2::254', 'fdff:ffff::1'], ['fbff:ffff::1']],
  ['fe80::/10', ['fe80::1', 'febf:ffff::1'], []],
  ['ff00::/8', ['ff02::1', 'ff0e::101', 'ffff:ffff::1'], ['2606:4700:4700::1111']],
];

describe('SSRF guard: addresses', () => {
  it.each(ranges)('refuses %s and allows the public addresses next to it', (_range, inside, outside) => {
    for (const ip of inside) expect(isForbiddenAddress(ip), ip).toBe(true);
    for (const ip of outside) expect(isForbiddenAddress(ip), ip).toBe(false);
  });

  it('refuses IPv6 forms that carry an IPv4 address (::/96, 64:ff9b:1::/48, 2002::/16, ::ffff:0:0/96 forms)', () => {
    // The findings: each of these reached loopback or the metadata service before.
    for (const ip of ['::7f00:1', '::127.0.0.1', '64:ff9b:1::a9fe:a9fe', '2002:7f00:1::', '::ffff:0:7f00:1'])
      expect(isForbiddenAddress(ip), ip).toBe(true);
  });

  it('allows public addresses of both families, bracketed or not', () => {
    for (const ip of ['8.8.8.8', '93.184.216.34', '2606:4700:4700::1111', '[2606:4700:4700::1111]', '2a00:1450::1'])
      expect(isForbiddenAddress(ip), ip).toBe(false);
    expect(isForbiddenAddress('[::1]')).toBe(true);
  });

  it('refuses what is not an address at all', () => {
    for (const s of ['', 'example.com', 'localhost', '127.0.0.1.', '1.2.3', '[]', '::g', '8.8.[8.8', '8.8.]8.8'])
      expect(isForbiddenAddress(s), s).toBe(true);
  });
});

describe('SSRF guard: URLs', () => {
  const refusal = (url: string, policy = strict) => {
    try {
      checkUrl(url, policy);
    } catch (err) {
      expect(err).toBeInstanceOf(RefusedError);
      expect((err as Error).name).toBe('RefusedError');
      expect((err as RefusedError).code).toBe('webhook_refused');
      return (err as Error).message;
    }
    return undefined;
  };

  it('refuses what is not a URL, and says so', () => {
    expect(refusal('not a url')).toBe('not a URL: not a url');
    expect(refusal(`http://${'x'.repeat(300)}:99999/`)).toBe(`not a URL: http://${'x'.repeat(193)}`);
  });

  it('refuses schemes other than http and https, naming the scheme', () => {
    expect(refusal('ftp://example.com/')).toBe('only http and https callbacks are allowed, not ftp:');
    expect(refusal('file:///etc/passwd')).toBe('only http and https callbacks are allowed, not file:');
    expect(refusal('gopher://example.com/')).toMatch(/not gopher:$/);
  });

  it('refuses credentials in any part: a user, a password, or both', () => {
    for (const url of ['http://user@example.com/', 'http://:secret@example.com/', 'https://user:secret@example.com/'])
      expect(refusal(url), url).toBe('callback URLs must not carry credentials');
  });

  it('refuses a forbidden address literal in any spelling, naming it', () => {
    expect(refusal('http://127.0.0.1/')).toBe(
      'refused: 127.0.0.1 is a private, loopback, link-local or reserved address',
    );
    expect(refusal('http://2130706433/')).toMatch(/^refused: 127\.0\.0\.1 /);
    expect(refusal('http://0x7f.1/')).toMatch(/^refused: 127\.0\.0\.1 /);
    expect(refusal('http://[::ffff:169.254.169.254]/')).toMatch(/^refused: ::ffff:a9fe:a9fe /);
    expect(refusal('http://[2002:a9fe:a9fe::1]:8080/x')).toMatch(/^refused: 2002:a9fe:a9fe::1 /);
  });

  it('accepts http and https to public names and addresses, and returns the parsed URL', () => {
    expect(checkUrl('https://example.com/hook?a=1', strict).href).toBe('https://example.com/hook?a=1');
    expect(checkUrl('http://8.8.8.8:8080/', strict).host).toBe('8.8.8.8:8080');
    expect(checkUrl('http://[2606:4700:4700::1111]/', strict).hostname).toBe('[2606:4700:4700::1111]');
    // A name is judged only after DNS (guardedLookup); here it passes.
    expect(refusal('http://internal.example/')).toBeUndefined();
  });

  it('lets a policy allow every address, or some, and still refuses the rest', () => {
    expect(checkUrl('http://127.0.0.1/', { allowPrivate: true }).hostname).toBe('127.0.0.1');
    const loopbackOnly: GuardPolicy = { allowPrivate: false, allow: (a) => a === '127.0.0.1' };
    expect(checkUrl('http://127.0.0.1:3000/', loopbackOnly).port).toBe('3000');
    expect(refusal('http://169.254.169.254/', loopbackOnly)).toMatch(/^refused: 169\.254\.169\.254 /);
    // allowPrivate does not open the scheme or credential checks.
    expect(refusal('ftp://127.0.0.1/', { allowPrivate: true })).toMatch(/only http and https/);
    expect(refusal('http://u@127.0.0.1/', { allowPrivate: true })).toMatch(/credentials/);
  });
});

describe('SSRF guard: DNS hook', () => {
  type Answer = { err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family?: number };
  const lookup = (policy: GuardPolicy, hostname: string, options: LookupOptions) =>
    new Promise<Answer>((resolve) =>
      guardedLookup(policy)(hostname, options, (err, address, family) => resolve({ err, address, family })),
    );
  const loopback: GuardPolicy = { allowPrivate: false, allow: (a) => a === '127.0.0.1' || a === '::1' };

  it('refuses a name that resolves to a forbidden address, naming both', async () => {
    const { err, address } = await lookup(strict, 'localhost', { family: 4 });
    expect(err).toBeInstanceOf(RefusedError);
    expect(address).toBe('');
    expect(err?.message).toBe(
      'refused: localhost resolves to 127.0.0.1, a private, loopback, link-local or reserved address',
    );
  });

  it('answers with the first address, or all of them, for a name the policy allows', async () => {
    expect(await lookup(loopback, 'localhost', { family: 4 })).toEqual({ err: null, address: '127.0.0.1', family: 4 });
    expect(await lookup(loopback, 'localhost', { family: 4, all: true })).toEqual({
      err: null,
      address: [{ address: '127.0.0.1', family: 4 }],
      family: undefined,
    });
    expect(await lookup({ allowPrivate: true }, 'localhost', { family: 4 })).toMatchObject({ address: '127.0.0.1' });
  });

  it('passes a failed lookup through as the resolver error, not as a refusal', async () => {
    const { err, address } = await lookup(strict, 'no-such-host.invalid', {});
    expect(err).not.toBeInstanceOf(RefusedError);
    expect(err?.code).toBe('ENOTFOUND');
    expect(address).toBe('');
  });
});
