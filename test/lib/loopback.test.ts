/** Loopback addresses and hosts (protected mode, TLS_REQUIRED), and the counting key. */
import t from 'tap';
import { canonicalAddress, isLoopbackAddress, isLoopbackHost } from '../../lib/loopback.js';

t.test('loopback addresses: all of 127.0.0.0/8, ::1, IPv4-mapped loopback', async (t) => {
  const loopback = [
    '127.0.0.1',
    '127.0.0.0',
    '127.255.255.255',
    '127.1.2.3',
    '::1',
    '0:0:0:0:0:0:0:1',
    '0000:0000:0000:0000:0000:0000:0000:0001',
    '::ffff:127.0.0.1',
    '::FFFF:127.9.8.7',
    '::ffff:7f00:1',
  ];
  const others = [
    '128.0.0.1',
    '126.255.255.255',
    '10.0.0.1',
    '0.0.0.0',
    '::',
    '::2',
    '::ffff:10.0.0.1',
    '::127.0.0.1',
    'fe80::1',
    'fe80::1%lo',
    '2001:db8::1',
    'localhost',
    '127.0.0.1.example',
    '',
    'garbage',
  ];
  for (const address of loopback) t.ok(isLoopbackAddress(address), address);
  for (const address of others) t.notOk(isLoopbackAddress(address), address || '(empty)');
  t.notOk(isLoopbackAddress(undefined));
});

t.test('loopback bind hosts', async (t) => {
  for (const host of [
    '127.0.0.1',
    '127.0.0.2',
    '::1',
    '[::1]',
    'localhost',
    'LOCALHOST',
    'localhost.',
    'media.localhost',
  ]) {
    t.ok(isLoopbackHost(host), host);
  }
  for (const host of [
    '0.0.0.0',
    '::',
    '[::]',
    '',
    '192.168.1.2',
    'example.com',
    'localhost.example',
  ]) {
    t.notOk(isLoopbackHost(host), host || '(empty)');
  }
});

t.test('one counting key per client, whichever door saw it', async (t) => {
  t.equal(canonicalAddress('::ffff:10.0.0.1'), '10.0.0.1');
  t.equal(canonicalAddress('::FFFF:10.0.0.1'), '10.0.0.1');
  t.equal(canonicalAddress('10.0.0.1'), '10.0.0.1');
  t.equal(canonicalAddress('2001:DB8::1'), '2001:db8::1');
  t.equal(canonicalAddress('::ffff:999.0.0.1'), '::ffff:999.0.0.1', 'not an IPv4 address');
});
