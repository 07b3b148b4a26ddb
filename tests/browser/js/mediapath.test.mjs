// The pure parts of "a call that cannot connect says so": when a connection counts as having no
// media path (mediapath.js), what the page says, and which browsers ignore TURN over TLS at an IP
// address (turns.js).
import assert from 'node:assert/strict';
import test from 'node:test';

import { FAILED_MS, MediaPathWatch, NO_PATH_MS, problemMessage } from '../../../src/meet443/web/static/js/mediapath.js';
import { isIpLiteral, turnsHost, unusableTlsRelay } from '../../../src/meet443/web/static/js/turns.js';

const FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:153.0) Gecko/20100101 Firefox/153.0';
const CHROMIUM = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36';

test('ICE failed is reported FAILED_MS later; a restart that connects clears it', () => {
  const watch = new MediaPathWatch();
  assert.deepEqual(watch.observe(new Map([['bob', 'checking']]), 0), []);
  assert.deepEqual(watch.observe(new Map([['bob', 'failed']]), 3_000), []);
  assert.deepEqual(watch.observe(new Map([['bob', 'failed']]), 3_000 + FAILED_MS), ['bob']);
  assert.deepEqual(watch.observe(new Map([['bob', 'connected']]), 9_000), []);
});

test('no path forming for NO_PATH_MS is reported, through ICE restarts too', () => {
  const watch = new MediaPathWatch();
  watch.observe(new Map([['sfu-publish', 'new']]), 0);
  watch.observe(new Map([['sfu-publish', 'failed']]), 4_000);
  watch.observe(new Map([['sfu-publish', 'checking']]), 5_000); // restarted: failed again from scratch
  assert.deepEqual(watch.observe(new Map([['sfu-publish', 'checking']]), NO_PATH_MS - 1), []);
  assert.deepEqual(watch.observe(new Map([['sfu-publish', 'checking']]), NO_PATH_MS), ['sfu-publish']);
});

test('a healthy connection, or one that went away, is never reported', () => {
  const watch = new MediaPathWatch();
  watch.observe(new Map([['ann', 'checking'], ['bob', 'connected']]), 0);
  assert.deepEqual(watch.observe(new Map([['bob', 'completed']]), 60_000), []);
  assert.deepEqual(watch.observe(new Map([['ann', 'checking']]), 61_000), [], 'ann is back: a fresh start');
});

test('the message names who cannot be reached and what to try', () => {
  const one = problemMessage({ who: ['Bob'], of: 3, host: 'meet.example' });
  assert.equal(one.headline, "Can't connect to Bob.");
  assert.match(one.advice, /phone hotspot.*VPN.*TCP and UDP port 443 to meet\.example/);
  assert.doesNotMatch(one.advice, /Firefox/);
  assert.equal(problemMessage({ who: ['Bob', 'Cy'], of: 3, host: 'h' }).headline, "Can't connect to Bob and 1 more.");
  assert.equal(problemMessage({ who: [], of: 0, host: 'h' }).headline, "Your audio and video can't get through.");
  assert.equal(problemMessage({ who: ['Bob', 'Cy'], of: 2, host: 'h' }).headline, "Your audio and video can't get through.");
  assert.equal(problemMessage({ who: ['Bob'], of: 1, host: 'h' }).headline, "Can't connect to Bob.");
  const fox = problemMessage({ who: ['Bob'], of: 1, host: '10.1.2.3', tlsRelayIp: '10.1.2.3' });
  assert.match(fox.advice, /Firefox cannot use this server's encrypted relay .* IP address \(10\.1\.2\.3\).*Chrome or Edge.*host name/);
});

test('Firefox ignores turns: at an IP literal, not at a host name; Chromium uses both', () => {
  assert.equal(turnsHost('turns:10.0.0.1:443?transport=tcp'), '10.0.0.1');
  assert.equal(turnsHost('turns:[2001:db8::1]:443?transport=tcp'), '2001:db8::1');
  assert.equal(turnsHost('turn:10.0.0.1:443?transport=tcp'), null);
  assert.ok(isIpLiteral('10.0.0.1') && isIpLiteral('2001:db8::1') && !isIpLiteral('meet.example'));
  const byIp = [{ urls: ['turn:10.0.0.1:443?transport=udp', 'turns:10.0.0.1:443?transport=tcp'] }];
  const byName = [{ urls: ['turns:meet.example:443?transport=tcp'] }];
  assert.equal(unusableTlsRelay(byIp, FIREFOX), '10.0.0.1');
  assert.equal(unusableTlsRelay(byName, FIREFOX), null);
  assert.equal(unusableTlsRelay(byIp, CHROMIUM), null);
  assert.equal(unusableTlsRelay(undefined, FIREFOX), null);
});
