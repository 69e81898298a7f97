/**
 * Loopback addresses, for protected mode and TLS_REQUIRED (access.md), and the one spelling of
 * a client address that per-address counting uses, so both doors count a client once.
 */
import { BlockList, isIP, isIPv4 } from 'node:net';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/**
 * True for 127.0.0.0/8, ::1 in any spelling, and IPv4-mapped loopback (`::ffff:127.x.y.z`,
 * `::ffff:7f00:1`). Anything else, an empty or malformed string included, is not loopback.
 */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  return LOOPBACK.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/**
 * True for a bind host that only loopback clients can reach: a loopback address (also in
 * brackets) or the name `localhost` (and `*.localhost`, RFC 6761). `0.0.0.0`, `::` and other
 * names are not.
 */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  const name = bare.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost')) return true;
  return isLoopbackAddress(bare);
}

/**
 * The spelling of a client address used as a counting key: an IPv4-mapped IPv6 address
 * (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4 clients) becomes plain IPv4, and
 * IPv6 is lower-cased, so one client is one key on both doors.
 */
export function canonicalAddress(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped && isIPv4(mapped[1])) return mapped[1];
  return address.toLowerCase();
}
