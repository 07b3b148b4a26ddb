// The closest relay (docs/cluster.md "Closest relay"): before joining, the page times a few HTTPS
// round trips to each region's node (`GET /v1/rtt`, listed by `GET /v1/regions`) and sends what it
// measured in its `join` (`rtts`); the server hands out the closest region's TURN URIs plus one
// fallback region's. Regions are probed in parallel, the pings to one region one after another on
// one kept-alive connection. The first ping of a region pays for TCP and TLS; Resource Timing (the
// node answers with Timing-Allow-Origin) gives its request-to-response time without them. Without
// Resource Timing the page's own clock measures, and the first ping only warms the connection up. A region that does not answer in REGION_TIMEOUT_MS is left out
// of `rtts` and named in `unreachable`, and a join never waits more than JOIN_WAIT_MS for the probe.

export const PINGS = 3;
export const REGION_TIMEOUT_MS = 2000;
/** Issue #16: measuring adds at most this much to a join. */
export const JOIN_WAIT_MS = 300;
/**
 * Round trips before a region's first answer: TCP, TLS (1.3; 1.2 takes one more) and the request.
 * A region still silent after HANDSHAKE_RTTS × x ms is farther than x ms, so the probe is decided
 * once the closest two are measured and every silent region is provably farther than them.
 */
export const HANDSHAKE_RTTS = 4;
/** As the server accepts them (meet443.regions: REGION_NAME, MAX_REGIONS, MAX_RTT_MS). */
export const REGION_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/;
export const MAX_REGIONS = 16;
export const MAX_RTT_MS = 10000;

/** The regions of a `/v1/regions` document worth probing: well-formed names, https RTT URLs. */
export function parseRegions(doc) {
  if (!doc || doc.version !== 1 || !Array.isArray(doc.regions)) return [];
  const seen = new Set();
  const out = [];
  for (const r of doc.regions) {
    if (!r || typeof r.name !== 'string' || !REGION_NAME.test(r.name) || seen.has(r.name)) continue;
    let url;
    try {
      url = new URL(r.rttUrl);
    } catch {
      continue;
    }
    if (url.protocol !== 'https:') continue;
    seen.add(r.name);
    out.push({ name: r.name, rttUrl: url.href });
    if (out.length === MAX_REGIONS) break;
  }
  return out;
}

/**
 * One ping's round trip in ms: from its Resource Timing entry when the node allowed it
 * (requestStart to responseStart, which leaves out connecting), else `clockMs` (the page's clock
 * around the fetch).
 */
export function pingRtt(entry, clockMs) {
  if (entry && entry.requestStart > 0 && entry.responseStart >= entry.requestStart) {
    return entry.responseStart - entry.requestStart;
  }
  return clockMs;
}

/** What `join.rtts` carries: each measured region's best round trip, rounded to 0.1 ms. */
export function joinRtts(measured) {
  const rtts = {};
  for (const [name, samples] of measured) {
    if (!samples.length) continue;
    const best = Math.min(...samples);
    if (Number.isFinite(best) && best >= 0) rtts[name] = Math.min(MAX_RTT_MS, Math.round(best * 10) / 10);
  }
  return rtts;
}

/**
 * Probes every region of a deployment: `start()` once (as the page opens), `rtts()` at any time for
 * what is measured so far, `settled(ms)` to wait (at most `ms`) until every region has answered
 * once or timed out.
 */
export class RegionProbe {
  constructor({ fetchImpl = (...a) => fetch(...a), performanceImpl = globalThis.performance, now = () => performanceImpl.now() } = {}) {
    this.fetchImpl = fetchImpl;
    this.performance = performanceImpl;
    this.now = now;
    this.regions = [];
    this.measured = new Map(); // name -> [ms, ...]
    this.pending = new Set(); // regions with no answer and no timeout yet
    this.waiters = [];
    this.done = false; // the closest regions are known (or there was nothing to probe)
    this.serial = 0;
    this.startedAt = 0;
    this.decideTimer = null;
  }

  /** Reads the region list from `regionsUrl` (the page's own node) and probes them all. */
  async start(regionsUrl) {
    let regions = [];
    try {
      const response = await this.fetchImpl(regionsUrl, { cache: 'no-store', credentials: 'same-origin' });
      if (response.ok) regions = parseRegions(await response.json());
    } catch {
      regions = [];
    }
    this.regions = regions;
    // One region (a single node) needs no measuring: the server has nothing to choose.
    if (regions.length < 2) {
      this.wake();
      return;
    }
    for (const r of regions) {
      this.measured.set(r.name, []);
      this.pending.add(r.name);
    }
    this.startedAt = this.now();
    await Promise.all(regions.map((r) => this.probeRegion(r)));
  }

  async probeRegion(region) {
    const deadline = this.now() + REGION_TIMEOUT_MS;
    for (let i = 0; i < PINGS; i += 1) {
      const left = deadline - this.now();
      if (left <= 0) break;
      const ping = await this.ping(region, left);
      if (ping === null) break;
      // Without Resource Timing the first ping's clock counts TCP and TLS too: a warm-up only.
      if (ping.timed || i > 0) {
        this.measured.get(region.name).push(ping.ms);
        this.settle(region.name);
      }
    }
    this.settle(region.name);
  }

  async ping(region, timeoutMs) {
    this.serial += 1;
    const url = `${region.rttUrl}?n=${this.serial}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    const started = this.now();
    try {
      const response = await this.fetchImpl(url, { cache: 'no-store', mode: 'cors', credentials: 'omit', signal: abort.signal });
      const clockMs = this.now() - started;
      if (!response.ok) return null;
      // The Resource Timing entry is added once the (empty) body is read.
      if (response.arrayBuffer) await response.arrayBuffer();
      const entries = this.performance && this.performance.getEntriesByName ? this.performance.getEntriesByName(url, 'resource') : [];
      const entry = entries[entries.length - 1];
      return { ms: pingRtt(entry, clockMs), timed: pingRtt(entry, null) !== null };
    } catch {
      return null; // unreachable, refused by CORS, or timed out
    } finally {
      clearTimeout(timer);
    }
  }

  settle(name) {
    if (this.pending.delete(name) && this.pending.size === 0) {
      this.wake();
      return;
    }
    if (this.done) return;
    // The second best (the fallback) bounds what a silent region could still beat.
    const best = [...this.measured.values()].filter((m) => m.length).map((m) => Math.min(...m)).sort((a, b) => a - b);
    if (best.length < 2) return;
    const bound = best[1];
    const decideIn = this.startedAt + HANDSHAKE_RTTS * bound - this.now();
    clearTimeout(this.decideTimer);
    if (decideIn <= 0) this.wake();
    else this.decideTimer = setTimeout(() => this.wake(), decideIn);
  }

  wake() {
    this.done = true;
    clearTimeout(this.decideTimer);
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /**
   * Waits until the closest regions are known (each answered once, gave up, or is provably
   * farther than the two best), or `ms` passed, whichever comes first.
   */
  settled(ms = JOIN_WAIT_MS) {
    if (this.done) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** `join.rtts`: what is measured so far (`{}` when there is nothing to choose between). */
  rtts() {
    return joinRtts(this.measured);
  }

  /**
   * `join.unreachable`: regions whose probe is over without one round trip (timed out, refused,
   * not allowed by CORS). The server never makes one of them the fallback, and counts them.
   */
  unreachable() {
    return [...this.measured].filter(([name, samples]) => !samples.length && !this.pending.has(name)).map(([name]) => name);
  }
}
