// The closest relay, client side (regions.js): which regions are probed, what a ping measures,
// what `join.rtts` carries, and that a join waits at most JOIN_WAIT_MS for unreachable regions.
import assert from 'node:assert/strict';
import test from 'node:test';

import {
  HANDSHAKE_RTTS, JOIN_WAIT_MS, MAX_REGIONS, PINGS, REGION_TIMEOUT_MS, RegionProbe, joinRtts, parseRegions, pingRtt,
} from '../../../src/meet443/web/static/js/regions.js';

const doc = (regions) => ({ version: 1, self: 'eu', regions });
const region = (name, host = `${name}.meet.example`) => ({ name, rttUrl: `https://${host}/v1/rtt` });

test('only well-formed regions with https RTT URLs are probed, each once, at most MAX_REGIONS', () => {
  assert.deepEqual(parseRegions(doc([region('eu'), region('us')])), [region('eu'), region('us')]);
  const bad = [
    { name: 'bad name', rttUrl: 'https://a.example/v1/rtt' },
    { name: 'plain', rttUrl: 'http://a.example/v1/rtt' },
    { name: 'nourl', rttUrl: 'not a url' },
    region('eu', 'eu2.meet.example'),
    null,
  ];
  assert.deepEqual(parseRegions(doc([region('eu'), ...bad])), [region('eu')]);
  assert.deepEqual(parseRegions({ version: 2, regions: [region('eu')] }), []);
  assert.deepEqual(parseRegions(null), []);
  const many = Array.from({ length: 40 }, (_, i) => region(`r${i}`));
  assert.equal(parseRegions(doc(many)).length, MAX_REGIONS);
});

test('without Resource Timing the first ping only warms up the connection', async () => {
  let n = 0;
  const fetchImpl = async (url) => {
    if (url === '/v1/regions') return { ok: true, json: async () => doc([region('eu'), region('us')]) };
    n += 1;
    return { ok: true };
  };
  let t = 0;
  const probe = new RegionProbe({ fetchImpl, performanceImpl: {}, now: () => (t += 5) });
  await probe.start('/v1/regions');
  assert.equal(n, 2 * PINGS);
  assert.equal(probe.measured.get('eu').length, PINGS - 1);
});

test('a ping is requestStart to responseStart when Timing-Allow-Origin allows, else the clock', () => {
  assert.equal(pingRtt({ requestStart: 100, responseStart: 160.5 }, 400), 60.5);
  assert.equal(pingRtt({ requestStart: 0, responseStart: 0 }, 400), 400, 'no TAO: zeroed timings');
  assert.equal(pingRtt(undefined, 42), 42);
});

test('join.rtts is each region\'s best ping, rounded, without unmeasured regions', () => {
  const measured = new Map([['eu', [31.27, 10.04, 12]], ['us', []], ['ap', [99999]]]);
  assert.deepEqual(joinRtts(measured), { eu: 10, ap: 10000 });
});

/** A fake network: each host answers after its RTT (or never), with Resource Timing entries. */
function fakeNetwork(rttByHost) {
  let now = 0;
  const timers = [];
  const entries = new Map();
  const clock = {
    now: () => now,
    advance(ms) {
      now += ms;
    },
  };
  const fetchImpl = (url, init) => {
    const u = new URL(url, 'https://eu.meet.example');
    if (u.pathname === '/v1/regions') {
      return Promise.resolve({ ok: true, json: async () => doc([region('eu'), region('us'), region('ap')]) });
    }
    const rtt = rttByHost[u.hostname];
    return new Promise((resolve, reject) => {
      init.signal.addEventListener('abort', () => reject(new Error('aborted')));
      if (rtt === undefined) return; // unreachable: only the timeout ends it
      const start = now;
      timers.push({
        at: now + rtt,
        fire() {
          entries.set(url, [{ requestStart: start + 1, responseStart: start + 1 + rtt * 0.9 }]);
          resolve({ ok: true });
        },
      });
    });
  };
  const performanceImpl = { getEntriesByName: (url) => entries.get(url) || [] };
  return { clock, timers, fetchImpl, performanceImpl };
}

/** Runs `probe` over `net` to the end, a millisecond at a time on both clocks. */
async function drive(t, net, probe) {
  const running = probe.start('/v1/regions');
  while (net.clock.now() <= REGION_TIMEOUT_MS) {
    await new Promise((r) => setImmediate(r));
    for (const due of net.timers.filter((x) => x.at <= net.clock.now())) {
      net.timers.splice(net.timers.indexOf(due), 1);
      due.fire();
    }
    await new Promise((r) => setImmediate(r));
    net.clock.advance(1);
    t.mock.timers.tick(1);
  }
  await running;
}

test('the wait ends once every silent region is provably farther than the best two', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const net = fakeNetwork({ 'eu.meet.example': 10, 'us.meet.example': 60 });
  const probe = new RegionProbe({ fetchImpl: net.fetchImpl, performanceImpl: net.performanceImpl, now: net.clock.now });
  let decidedAt = null;
  probe.settled(REGION_TIMEOUT_MS * 2).then(() => {
    decidedAt = net.clock.now();
  });
  await drive(t, net, probe);
  // us answers at 60 ms (measured 54): ap, silent, would need HANDSHAKE_RTTS × 54 ms to be closer.
  assert.equal(decidedAt, HANDSHAKE_RTTS * 54);
  assert.ok(decidedAt < REGION_TIMEOUT_MS);
});

test('regions are probed in parallel; unreachable ones are left out; PINGS each', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const net = fakeNetwork({ 'eu.meet.example': 10, 'us.meet.example': 60 });
  const probe = new RegionProbe({ fetchImpl: net.fetchImpl, performanceImpl: net.performanceImpl, now: net.clock.now });
  await drive(t, net, probe);
  assert.deepEqual(probe.rtts(), { eu: 9, us: 54 });
  assert.deepEqual(probe.unreachable(), ['ap']);
  assert.equal(probe.measured.get('eu').length, PINGS);
  assert.equal(probe.measured.get('ap').length, 0);
  await probe.settled(); // all settled: resolves at once
});

test('a region still being probed is not unreachable yet', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const net = fakeNetwork({ 'eu.meet.example': 10 });
  const probe = new RegionProbe({ fetchImpl: net.fetchImpl, performanceImpl: net.performanceImpl, now: net.clock.now });
  probe.start('/v1/regions');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(probe.unreachable(), []);
});

test('a join waits at most JOIN_WAIT_MS for regions still being measured', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const net = fakeNetwork({});
  const probe = new RegionProbe({ fetchImpl: net.fetchImpl, performanceImpl: net.performanceImpl, now: net.clock.now });
  probe.start('/v1/regions');
  await new Promise((r) => setImmediate(r));
  let waited = false;
  probe.settled().then(() => {
    waited = true;
  });
  t.mock.timers.tick(JOIN_WAIT_MS - 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(waited, false);
  t.mock.timers.tick(1);
  await new Promise((r) => setImmediate(r));
  assert.equal(waited, true);
  assert.deepEqual(probe.rtts(), {});
});

test('a single region is not measured and never delays a join', async () => {
  const fetchImpl = async () => ({ ok: true, json: async () => doc([region('eu')]) });
  const probe = new RegionProbe({ fetchImpl, performanceImpl: {}, now: () => 0 });
  await probe.start('/v1/regions');
  await probe.settled();
  assert.deepEqual(probe.rtts(), {});
  const broken = new RegionProbe({ fetchImpl: async () => { throw new Error('offline'); }, performanceImpl: {}, now: () => 0 });
  await broken.start('/v1/regions');
  await broken.settled();
});
