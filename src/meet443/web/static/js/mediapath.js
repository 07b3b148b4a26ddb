// A call whose media cannot get through says so, instead of "Connecting…" forever.
//
// MediaPathWatch is pure: it is given every peer connection's ICE state with the time, and says
// which of them have had no media path for too long. watchMediaPaths() polls the page's
// connections once a second, keeps `state.mediaProblem` up to date and renders it in
// #media-problem, with what to try and a link to /check. The message goes as soon as every
// connection has a path again.

import { onRender, state, update } from './state.js';
import { unusableTlsRelay } from './turns.js';

/** A connection that never had a media path, or lost it, for this long is reported. */
export const NO_PATH_MS = 15_000;
/**
 * ICE `failed` is reported sooner: the page restarts ICE at once on `failed`, and a restart that
 * can succeed does within a few seconds (Firefox itself declares `failed` about 5 s after its last
 * candidate pair failed).
 */
export const FAILED_MS = 5_000;
const POLL_MS = 1_000;
const CONNECTED = new Set(['connected', 'completed']);

export class MediaPathWatch {
  constructor() {
    this.lostAt = new Map(); // key -> when it was first seen without a path
    this.failedAt = new Map(); // key -> when it was first seen `failed`
  }

  /** `states`: key -> iceConnectionState, now in ms. Returns the keys without a path for too long. */
  observe(states, now) {
    for (const key of [...this.lostAt.keys()]) if (!states.has(key)) this.lostAt.delete(key);
    for (const key of [...this.failedAt.keys()]) if (!states.has(key)) this.failedAt.delete(key);
    const stuck = [];
    for (const [key, iceState] of states) {
      if (CONNECTED.has(iceState)) {
        this.lostAt.delete(key);
        this.failedAt.delete(key);
        continue;
      }
      if (!this.lostAt.has(key)) this.lostAt.set(key, now);
      if (iceState === 'failed') {
        if (!this.failedAt.has(key)) this.failedAt.set(key, now);
      } else {
        this.failedAt.delete(key);
      }
      const failedLong = this.failedAt.has(key) && now - this.failedAt.get(key) >= FAILED_MS;
      if (failedLong || now - this.lostAt.get(key) >= NO_PATH_MS) stuck.push(key);
    }
    return stuck;
  }
}

/**
 * What the page says: `who` names the people the media cannot reach (empty: everyone, as in a
 * group room, where it all goes through the server), `of` how many there are, `host` the server's
 * host name, `tlsRelayIp` the address of a TURN-over-TLS relay this browser will not use.
 */
export function problemMessage({ who, of, host, tlsRelayIp }) {
  let headline;
  if (who.length === 0 || (who.length >= of && of > 1)) headline = "Your audio and video can't get through.";
  else if (who.length === 1) headline = `Can't connect to ${who[0]}.`;
  else headline = `Can't connect to ${who[0]} and ${who.length - 1} more.`;
  let advice = 'A firewall or VPN may block video calls. Try another network (a phone hotspot works), turn off '
    + `a VPN, or ask your IT team to allow outbound TCP and UDP port 443 to ${host}.`;
  if (tlsRelayIp) {
    advice += ' If your network lets only encrypted web traffic through: Firefox cannot use this server\'s '
      + `encrypted relay (TURN over TLS) while the server is addressed by its IP address (${tlsRelayIp}). `
      + 'Use Chrome or Edge, or ask whoever runs this server to give it a host name.';
  }
  return { headline, advice };
}

function render(s) {
  const box = document.getElementById('media-problem');
  if (!box) return;
  const problem = s.phase === 'in-call' ? s.mediaProblem : null;
  box.hidden = !problem;
  if (!problem) return;
  const text = `${problem.headline} ${problem.advice}`;
  const line = document.getElementById('media-problem-text');
  if (line.textContent !== text) line.textContent = text;
}

/**
 * The connections that carry media now: key -> {pc, name} (a mesh peer's display name; the SFU's
 * two connections have none, everyone's media comes through them).
 */
function mediaConnections({ mesh, sfu }) {
  const out = new Map();
  if (sfu) {
    out.set('sfu-publish', { pc: sfu.pub });
    if (sfu.sub) out.set('sfu-subscribe', { pc: sfu.sub });
  } else if (mesh) {
    for (const [peerId, link] of mesh.links) {
      out.set(peerId, { pc: link.pc, name: state.participants[peerId]?.displayName || 'someone' });
    }
  }
  return out;
}

/** Watch the call's connections (`calls()` -> {mesh, sfu} of room.js) while the page is in a call. */
export function watchMediaPaths(calls) {
  const watch = new MediaPathWatch();
  onRender(render);
  setInterval(() => {
    const current = state.phase === 'in-call' ? mediaConnections(calls()) : new Map();
    const states = new Map([...current].map(([key, c]) => [key, c.pc.iceConnectionState]));
    const stuck = watch.observe(states, performance.now());
    let problem = null;
    if (stuck.length) {
      const pcs = stuck.map((key) => current.get(key).pc);
      const who = stuck.map((key) => current.get(key).name).filter(Boolean);
      const config = pcs[0].getConfiguration ? pcs[0].getConfiguration() : {};
      problem = {
        ...problemMessage({
          who,
          of: [...current.values()].filter((c) => c.name).length,
          host: window.location.hostname,
          tlsRelayIp: unusableTlsRelay(config.iceServers, navigator.userAgent),
        }),
        connections: stuck,
      };
    }
    if (JSON.stringify(problem) !== JSON.stringify(state.mediaProblem)) {
      update((s) => {
        s.mediaProblem = problem;
      });
    }
  }, POLL_MS);
}
