// Recipient address rules, in process: each refusal by the rule that makes it (the message the client sees), the
// length limits at their edges, and the helpers for the domain. The email job's tests check the same rules through
// the API (a 400 naming payload.to).
import { describe, expect, it } from 'vitest';
import { addressProblem, isValidAddress, normalizeAddress, senderDomain } from '../src/jobs/email/address.js';

const local64 = 'l'.repeat(64);
/** A valid domain of `n` characters: labels of at most 63 characters, then `.com`. */
const domainOf = (n: number) => {
  const labels: string[] = [];
  for (let left = n - 4; left > 0; ) {
    // Never leave a single character over: it would be a dot with an empty label after it.
    const size = Math.min(63, left) - (left - Math.min(63, left) === 1 ? 1 : 0);
    labels.push('d'.repeat(size));
    left -= size + 1;
  }
  return `${labels.join('.')}.com`;
};

describe('recipient addresses', () => {
  it('accepts bare ASCII mailboxes, with every atext character and punycode domains', () => {
    for (const a of [
      'a@example.com',
      'A@EXAMPLE.COM',
      "o'brien+tag@mail.example.co.uk",
      "!#$%&'*+/=?^_`{|}~-@example.com",
      'first.last.x@example.com',
      'x_y.z-1@sub.xn--bcher-kva.example',
      'a@example.xn--p1ai',
      'a@1.example.com',
      'a@a-b.example.com',
      'a@example.io',
      'z9@example.museum',
    ]) {
      expect(addressProblem(a), a).toBeUndefined();
      expect(isValidAddress(a), a).toBe(true);
    }
  });

  it.each([
    ['', 'must be one address of the form local@domain'],
    ['a', 'must be one address of the form local@domain'],
    ['a@', 'has an invalid domain'],
    ['@example.com', 'must be one address of the form local@domain'],
    ['a@@example.com', 'must be one address of the form local@domain'],
    ['a@b@example.com', 'must be one address of the form local@domain'],
    ['a@example.com\n', 'must not contain CR or LF'],
    ['a@example.com\r', 'must not contain CR or LF'],
    ['a@example.com\r\nBcc: v@example.com', 'must not contain CR or LF'],
    ['a b@example.com', 'must be a bare ASCII address without spaces or control characters'],
    ['a\t@example.com', 'must be a bare ASCII address without spaces or control characters'],
    ['a\u0000@example.com', 'must be a bare ASCII address without spaces or control characters'],
    ['a\u007f@example.com', 'must be a bare ASCII address without spaces or control characters'],
    ['ü@example.com', 'must be a bare ASCII address without spaces or control characters'],
    ['a@bücher.example', 'must be a bare ASCII address without spaces or control characters'],
    ['Bob <bob@example.com>', 'must be a bare ASCII address without spaces or control characters'],
    ['.a@example.com', 'has a local part with characters or dots not allowed here'],
    ['a.@example.com', 'has a local part with characters or dots not allowed here'],
    ['a..b@example.com', 'has a local part with characters or dots not allowed here'],
    ['"ab"@example.com', 'has a local part with characters or dots not allowed here'],
    ['a(b)@example.com', 'has a local part with characters or dots not allowed here'],
    ['a,b@example.com', 'has a local part with characters or dots not allowed here'],
    ['a@example', 'has an invalid domain'],
    ['a@.example.com', 'has an invalid domain'],
    ['a@example.com.', 'has an invalid domain'],
    ['a@example..com', 'has an invalid domain'],
    ['a@-example.com', 'has an invalid domain'],
    ['a@example-.com', 'has an invalid domain'],
    ['a@exa_mple.com', 'has an invalid domain'],
    ['a@[127.0.0.1]', 'has an invalid domain'],
    [`a@${'x'.repeat(64)}.com`, 'has an invalid domain'],
    ['a@example.c', 'has an invalid top-level domain'],
    ['a@example.123', 'has an invalid top-level domain'],
    ['a@example.com1', 'has an invalid top-level domain'],
    ['a@example.c0m', 'has an invalid top-level domain'],
    ['a@example.xn--', 'has an invalid domain'],
    ['a@example.xn-p1ai', 'has an invalid top-level domain'],
    ['a@example.co-m', 'has an invalid top-level domain'],
  ])('refuses %j: %s', (address, problem) => {
    expect(addressProblem(address)).toBe(problem);
    expect(isValidAddress(address)).toBe(false);
  });

  it('holds the length limits at their edges: 64 for the local part, 254 in all', () => {
    expect(addressProblem(`${local64}@example.com`)).toBeUndefined();
    expect(addressProblem(`${local64}x@example.com`)).toBe('has a local part longer than 64 characters');
    // The longest domain a 1-character local part leaves: 254 - 2 = 252 characters.
    const longest = `a@${domainOf(252)}`;
    expect(longest).toHaveLength(254);
    expect(addressProblem(longest)).toBeUndefined();
    expect(addressProblem(`ab@${domainOf(252)}`)).toBe('is longer than 254 characters');
    expect(addressProblem(`${local64}@${domainOf(189)}`)).toBeUndefined();
    expect(addressProblem(`${local64}@${domainOf(190)}`)).toBe('is longer than 254 characters');
    // A label of 63 characters is the longest.
    expect(addressProblem(`a@${'x'.repeat(63)}.com`)).toBeUndefined();
  });

  it('lowercases the domain only, since a server may treat local parts case-sensitively', () => {
    expect(normalizeAddress('Bob.Smith@Mail.EXAMPLE.com')).toBe('Bob.Smith@mail.example.com');
    expect(normalizeAddress('a@example.com')).toBe('a@example.com');
  });

  it("takes Message-IDs' domain from the From header, bare or with a display name", () => {
    expect(senderDomain('Movie Jobs <noreply@Movies.Example>')).toBe('movies.example');
    expect(senderDomain('  noreply@movies.test  ')).toBe('movies.test');
    expect(senderDomain('"a@b" <x@mail-1.example.org>')).toBe('mail-1.example.org');
    expect(senderDomain('Movie Jobs')).toBe('localhost');
    expect(senderDomain('noreply@')).toBe('localhost');
    expect(senderDomain('<noreply@bad_domain.example>')).toBe('localhost');
  });
});
