// Our own recipient-address rules, stricter than RFC 5322 and than nodemailer's parser, which is lenient on purpose
// (it accepts display names, comments, groups and quoted strings). A recipient here is a bare ASCII mailbox: no
// display name, no quoted local part, no IP literal, no whitespace or control characters, a domain with a dot.
// International domains must come punycoded (xn--); SMTPUTF8 local parts are refused.

/** RFC 5322 atext, as a dot-atom: no leading, trailing or doubled dots. */
const LOCAL = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
/** RFC 1035 label: letters, digits and inner hyphens, 1..63. */
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
/** A top-level domain is alphabetic (2+) or an IDN in punycode; LABEL has already bounded its length. */
const TLD = /^(?:[A-Za-z]{2,}|xn--[A-Za-z0-9-]+)$/;

export function addressProblem(value: string): string | undefined {
  if (value.length > 254) return 'is longer than 254 characters';
  if (/[\r\n]/.test(value)) return 'must not contain CR or LF';
  if (/[\x00-\x20\x7f-\uffff]/.test(value)) return 'must be a bare ASCII address without spaces or control characters';
  const at = value.lastIndexOf('@');
  if (at < 1 || value.indexOf('@') !== at) return 'must be one address of the form local@domain';
  const local = value.slice(0, at);
  const domain = value.slice(at + 1);
  if (local.length > 64) return 'has a local part longer than 64 characters';
  if (!LOCAL.test(local)) return 'has a local part with characters or dots not allowed here';
  const labels = domain.split('.');
  // No check of the domain's 253-character limit: 254 in all, less a local part and the @, leaves at most 252.
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l))) return 'has an invalid domain';
  if (!TLD.test(labels[labels.length - 1])) return 'has an invalid top-level domain';
  return undefined;
}

export function isValidAddress(value: string): boolean {
  return addressProblem(value) === undefined;
}

/** Domains are case-insensitive; local parts are left as given (a server may treat them case-sensitively). */
export function normalizeAddress(value: string): string {
  const at = value.lastIndexOf('@');
  return `${value.slice(0, at)}@${value.slice(at + 1).toLowerCase()}`;
}

/** The domain of a From header such as `Movie Jobs <noreply@example.com>`, for Message-IDs. */
export function senderDomain(from: string): string {
  const m = /@([A-Za-z0-9.-]+)>?$/.exec(from.trim());
  return m ? m[1].toLowerCase() : 'localhost';
}
