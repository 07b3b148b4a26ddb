// meet443 network check in the browser: the page's view of the network contract.
//
// Checks: HTTPS (this page came over it), WSS signaling (ping -> error not-joined), STUN on the main
// UDP port and on the server's other UDP port (a reflexive candidate from each), and TURN over UDP,
// TCP and TLS one TURN URI at a time with iceTransportPolicy 'relay': a relayed candidate, then a
// short call between two RTCPeerConnections in this page through the relay (data channel ping-pong).
// The TURN credentials come from POST /v1/network/check-credentials; they relay only to this server.
//
// The UI state is one plain object rendered by render(); window.meet443.state() returns a copy.

import { unusableTlsRelay } from './js/turns.js';

const SERVICES = {
  https: ['web app, REST API (HTTPS)', 'TCP (TLS)'],
  wss: ['signaling (secure WebSocket)', 'TCP (TLS)'],
  stun: ['STUN (reflexive address)', 'UDP'],
  'turn-udp': ['TURN relay (UDP)', 'UDP'],
  'turn-tcp': ['TURN relay (TCP)', 'TCP'],
  'turn-tls': ['TURN relay (TLS)', 'TCP (TLS)'],
  'direct-udp': ['direct UDP, peer to peer', 'UDP'],
};
const ORDER = Object.keys(SERVICES);
const MEDIA_PATHS = ['direct-udp', 'sfu-udp', 'turn-udp', 'turn-tcp', 'turn-tls'];
const PATH_NAMES = {
  'direct-udp': 'direct UDP (any port)',
  'sfu-udp': 'UDP to the SFU port',
  'turn-udp': 'TURN relay over UDP',
  'turn-tcp': 'TURN relay over TCP',
  'turn-tls': 'TURN relay over TLS',
  none: 'none',
};
const GATHER_MS = 6000;
const CALL_MS = 10000;
const PINGS = 50;
const PING_SPACING_MS = 4;
const PING_BYTES = 1000;

const port = Number(location.port || 443);
const state = {
  phase: 'idle',
  server: location.origin,
  checks: {},
  best_path: null,
  p2p_direct: null,
  summary: '',
  advice: [],
};

window.meet443 = { state: () => JSON.parse(JSON.stringify(state)) };

function $(id) {
  return document.getElementById(id);
}

function setCheck(name, fields) {
  state.checks[name] = { name, ...state.checks[name], ...fields };
  render();
}

function blocked(name, detail, extra = {}) {
  setCheck(name, { state: 'blocked', ok: false, detail, ...extra });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Median round trip, mean difference of consecutive round trips, loss, as the CLI computes them. */
export function burstStats(rtts, sent) {
  if (!rtts.length) return { rtt_ms: null, jitter_ms: null, loss: 1 };
  let jitter = null;
  if (rtts.length > 1) {
    let sum = 0;
    for (let i = 1; i < rtts.length; i += 1) sum += Math.abs(rtts[i] - rtts[i - 1]);
    jitter = sum / (rtts.length - 1);
  }
  return { rtt_ms: median(rtts), jitter_ms: jitter, loss: 1 - rtts.length / sent };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// Probes

async function checkHttps() {
  setCheck('https', { state: 'running', port });
  try {
    await fetch('/healthz', { cache: 'no-store' });
    const started = performance.now();
    const response = await fetch('/healthz', { cache: 'no-store' });
    const rtt = performance.now() - started;
    if (!response.ok) throw new Error(`GET /healthz answered ${response.status}`);
    setCheck('https', { state: 'ok', ok: true, rtt_ms: rtt, detail: 'this page and GET /healthz came over HTTPS' });
  } catch (error) {
    blocked('https', String(error.message || error));
  }
}

async function credentials() {
  const response = await fetch('/v1/network/check-credentials', { method: 'POST', cache: 'no-store' });
  if (response.status === 429) throw new Error('too many checks from this address: try again in a minute');
  if (!response.ok) throw new Error(`check credentials: HTTP ${response.status}`);
  return response.json();
}

function checkWss() {
  setCheck('wss', { state: 'running', port });
  return new Promise((resolve) => {
    let sent = 0;
    let settled = false;
    const socket = new WebSocket(`wss://${location.host}/v1/ws`);
    const finish = (fields) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      setCheck('wss', fields);
      try { socket.close(1000); } catch { /* already closed */ }
      resolve();
    };
    const timer = setTimeout(() => finish({ state: 'blocked', ok: false, detail: 'no answer in 6 s' }), 6000);
    socket.onopen = () => {
      sent = performance.now();
      socket.send('{"type":"ping"}');
    };
    socket.onmessage = (event) => {
      let message = null;
      try { message = JSON.parse(event.data); } catch { /* not JSON */ }
      if (message && message.type === 'error' && message.code === 'not-joined') {
        finish({ state: 'ok', ok: true, rtt_ms: performance.now() - sent, detail: 'ping answered with not-joined' });
      } else {
        finish({ state: 'blocked', ok: false, detail: `unexpected answer ${String(event.data).slice(0, 80)}` });
      }
    };
    socket.onerror = () => finish({
      state: 'blocked', ok: false, detail: 'the WebSocket failed (blocked, or a proxy that does not pass WebSockets)',
    });
  });
}

/** Candidates of one RTCPeerConnection with `config`, until `done(candidate)` is true or time runs out. */
function gather(config, done, ms) {
  return new Promise((resolve) => {
    const pc = new RTCPeerConnection(config);
    const seen = [];
    let finished = false;
    const finish = (candidate) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      pc.close();
      resolve({ candidate, seen });
    };
    const timer = setTimeout(() => finish(null), ms);
    pc.onicecandidate = (event) => {
      if (!event.candidate) return finish(null);
      seen.push(event.candidate);
      if (done(event.candidate)) finish(event.candidate);
      return undefined;
    };
    pc.createDataChannel('gather');
    pc.createOffer().then((offer) => pc.setLocalDescription(offer)).catch(() => finish(null));
  });
}

async function checkStun(name, url, checkPort) {
  setCheck(name, { state: 'running', port: checkPort });
  const { candidate } = await gather({ iceServers: [{ urls: [url] }] }, (c) => c.type === 'srflx', GATHER_MS);
  if (candidate) {
    setCheck(name, {
      state: 'ok', ok: true, reflexive: `${candidate.address}:${candidate.port}`,
      detail: `server-reflexive candidate ${candidate.address}:${candidate.port} from ${url}`,
    });
  } else {
    blocked(name, `no server-reflexive candidate from ${url} in ${GATHER_MS / 1000} s: UDP ${checkPort} blocked `
      + '(or the browser hid a reflexive address equal to a local one)');
  }
}

/** Two relay-only connections in this page through one TURN URI; a data channel ping-pong between them. */
async function relayedCall(uri, creds) {
  const config = {
    iceServers: [{ urls: [uri], username: creds.username, credential: creds.credential }],
    iceTransportPolicy: 'relay',
  };
  const a = new RTCPeerConnection(config);
  const b = new RTCPeerConnection(config);
  let relay = null;
  let gotRelay;
  const relayGathered = new Promise((resolve) => { gotRelay = resolve; });
  a.onicecandidate = (event) => {
    if (event.candidate) {
      if (event.candidate.type === 'relay' && !relay) {
        relay = event.candidate;
        gotRelay(relay);
      }
      b.addIceCandidate(event.candidate).catch(() => {});
    }
  };
  b.onicecandidate = (event) => {
    if (event.candidate) a.addIceCandidate(event.candidate).catch(() => {});
  };
  b.ondatachannel = (event) => {
    const channel = event.channel;
    channel.onmessage = (message) => channel.send(message.data);
  };
  const channel = a.createDataChannel('check', { ordered: false, maxRetransmits: 0 });
  try {
    const offer = await a.createOffer();
    await a.setLocalDescription(offer);
    await b.setRemoteDescription(offer);
    const answer = await b.createAnswer();
    await b.setLocalDescription(answer);
    await a.setRemoteDescription(answer);
    try {
      await withTimeout(relayGathered, GATHER_MS, 'relayed candidate');
    } catch {
      return { gathered: false };
    }
    const opened = new Promise((resolve) => { channel.onopen = resolve; });
    try {
      await withTimeout(opened, CALL_MS, 'relayed call');
    } catch {
      return { gathered: true, relay, connected: false };
    }
    const sentAt = new Map();
    const rtts = [];
    let lastBack = 0;
    let allBack;
    const done = new Promise((resolve) => { allBack = resolve; });
    channel.onmessage = (message) => {
      const seq = new DataView(message.data).getUint32(0);
      if (sentAt.has(seq)) {
        lastBack = performance.now();
        rtts.push(lastBack - sentAt.get(seq));
        sentAt.delete(seq);
        if (rtts.length === PINGS) allBack();
      }
    };
    channel.binaryType = 'arraybuffer';
    const started = performance.now();
    for (let seq = 0; seq < PINGS; seq += 1) {
      const payload = new ArrayBuffer(PING_BYTES);
      new DataView(payload).setUint32(0, seq);
      sentAt.set(seq, performance.now());
      channel.send(payload);
      await new Promise((resolve) => { setTimeout(resolve, PING_SPACING_MS); });
    }
    await withTimeout(done, 1500, 'the last pongs').catch(() => {});
    // Payload bits back per second, first send to last answer: a lower bound, the burst is paced.
    const elapsed = (lastBack - started) / 1000;
    return {
      gathered: true, relay, connected: true, ...burstStats(rtts, PINGS), received: rtts.length,
      throughput_kbps: elapsed > 0 ? (rtts.length * PING_BYTES * 8) / elapsed / 1000 : null,
    };
  } finally {
    a.close();
    b.close();
  }
}

async function checkTurn(transport, uri, creds) {
  const name = `turn-${transport}`;
  setCheck(name, { state: 'running', port });
  const result = await relayedCall(uri, creds);
  const ignoredAt = transport === 'tls' ? unusableTlsRelay([{ urls: [uri] }], navigator.userAgent) : null;
  if (!result.gathered && ignoredAt) {
    // Not the network: Firefox gathers nothing from turns: at an IP literal, and says nothing.
    setCheck(name, {
      state: 'browser', ok: false, ignoredAt,
      detail: `Firefox does not use TURN over TLS at an IP address (${uri}), so it gathered no relayed `
        + 'candidate: this is not a firewall block. The server needs a host name (meet443 serve --public-url '
        + 'https://<name>); Chrome and Edge use it as it is.',
    });
  } else if (!result.gathered) {
    blocked(name, `no relayed candidate from ${uri} in ${GATHER_MS / 1000} s: TURN over ${transport.toUpperCase()} is blocked`);
  } else if (!result.connected) {
    blocked(name, `relayed candidate ${result.relay.address}:${result.relay.port}, but the relayed call did not connect`);
  } else if (!result.received) {
    blocked(name, 'the relayed call connected, but no ping came back');
  } else {
    setCheck(name, {
      state: 'ok', ok: true, rtt_ms: result.rtt_ms, jitter_ms: result.jitter_ms, loss: result.loss,
      throughput_kbps: result.throughput_kbps,
      detail: `relayed candidate ${result.relay.address}:${result.relay.port}; ${result.received}/${PINGS} pings `
        + `of ${PING_BYTES} bytes came back through the relay`,
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Verdict (the rules of meet443.netcheck.verdict, for the checks a browser can make)

/** best_path, p2p_direct, summary and advice from the check results (name -> {ok, ...}). */
export function decide(checks) {
  const ok = (name) => Boolean(checks[name] && checks[name].ok);
  const signaling = ok('wss');
  const works = {
    'direct-udp': ok('direct-udp') && (ok('stun') || ok('turn-udp')),
    'sfu-udp': ok('stun'),
    'turn-udp': ok('turn-udp'),
    'turn-tcp': ok('turn-tcp'),
    'turn-tls': ok('turn-tls'),
  };
  const media = MEDIA_PATHS.find((path) => works[path]) || 'none';
  const best = signaling ? media : 'none';
  const p2p = signaling && ok('direct-udp');
  const tlsIgnored = checks['turn-tls']?.state === 'browser';
  const advice = [];
  let summary;
  if (!signaling) {
    summary = media === 'none'
      ? 'No call is possible from this network: neither signaling nor media reach the server.'
      : `Media could flow (${PATH_NAMES[media]}), but signaling (WSS) is blocked: no call can start.`;
    advice.push(`Allow outbound TCP ${port} (HTTPS and secure WebSocket) to ${location.hostname}, including WebSocket upgrades.`);
  } else if (best === 'none' && tlsIgnored) {
    summary = 'Signaling works, but no media path does from this browser: calls would connect without sound or '
      + `video. Firefox does not use this server's TURN over TLS, because the server is addressed by its IP `
      + `address (${checks['turn-tls'].ignoredAt}), and nothing else got through this network.`;
  } else if (best === 'none') {
    summary = 'Signaling works, but no media path does: calls would connect without sound or video.';
  } else {
    summary = `Calls work. Best media path: ${PATH_NAMES[best]}.`
      + (p2p ? ' Peer-to-peer calls can probably skip the relay.' : ' Peer-to-peer calls go through the relay.');
  }
  if (signaling && ['turn-tcp', 'turn-tls', 'none'].includes(best)) {
    advice.push(`Allow outbound UDP ${port} to ${location.hostname}: media over UDP avoids the delay of TCP.`);
  }
  if (tlsIgnored) {
    advice.push('Use Chrome or Edge on networks that let only encrypted web traffic through, or ask whoever runs '
      + 'this server to give it a host name (meet443 serve --public-url https://<name>): Firefox uses TURN over '
      + 'TLS only with a host name.');
  }
  if (signaling && best !== 'none' && !p2p) {
    advice.push('For peer-to-peer media (rooms of up to four), allow outbound UDP 1024-65535.');
  }
  return { best_path: best, p2p_direct: p2p, summary, advice };
}

// ---------------------------------------------------------------------------------------------
// Rendering

function resultText(check) {
  if (!check || check.state === 'waiting' || !check.state) return 'waiting';
  if (check.state === 'running') return 'checking…';
  if (check.state === 'browser') return 'not used by Firefox at an IP address';
  if (!check.ok) return 'blocked';
  const parts = ['ok'];
  if (check.rtt_ms != null) parts.push(`${Math.round(check.rtt_ms)} ms`);
  if (check.jitter_ms != null) parts.push(`jitter ${check.jitter_ms.toFixed(1)} ms`);
  if (check.loss != null) parts.push(`loss ${Math.round(check.loss * 100)}%`);
  if (check.throughput_kbps != null) parts.push(`${(check.throughput_kbps / 1000).toFixed(1)} Mbit/s`);
  return parts.join(', ');
}

function cell(row, text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function render() {
  document.body.dataset.phase = state.phase;
  $('run').disabled = state.phase === 'running';
  const rows = $('rows');
  rows.replaceChildren();
  for (const name of ORDER) {
    const check = state.checks[name] || {};
    const [service, protocol] = SERVICES[name];
    const row = document.createElement('tr');
    row.dataset.check = name;
    cell(row, service);
    cell(row, name === 'direct-udp' ? `1024-65535 (tried ${check.port || '?'})` : String(check.port || port));
    cell(row, protocol);
    const result = cell(row, resultText(check), 'result');
    result.dataset.state = check.state || 'waiting';
    cell(row, check.detail || '', 'detail');
    rows.append(row);
  }
  const verdict = $('verdict');
  verdict.dataset.best = state.best_path || 'pending';
  $('summary').textContent = state.phase === 'done' ? state.summary : 'Checking…';
  const advice = $('advice');
  advice.replaceChildren(...state.advice.map((line) => {
    const item = document.createElement('li');
    item.textContent = line;
    return item;
  }));
}

async function run() {
  state.phase = 'running';
  state.checks = {};
  state.best_path = null;
  state.p2p_direct = null;
  state.advice = [];
  render();
  const signaling = checkWss();
  await checkHttps();
  let creds = null;
  try {
    creds = await credentials();
  } catch (error) {
    for (const name of ['stun', 'turn-udp', 'turn-tcp', 'turn-tls', 'direct-udp']) {
      blocked(name, `not tested: ${error.message || error}`);
    }
  }
  const probes = [signaling];
  if (creds) {
    const uris = (creds.iceServers[0] && creds.iceServers[0].urls) || [];
    const udpUri = uris.find((u) => /^turn:.*transport=udp/i.test(u)) || '';
    const hostPort = udpUri.replace(/^turn:/i, '').replace(/\?.*$/, '');
    const host = hostPort.replace(/:\d+$/, '');
    probes.push(checkStun('stun', `stun:${hostPort}`, port));
    if (creds.otherUdpPort) {
      probes.push(checkStun('direct-udp', `stun:${host}:${creds.otherUdpPort}`, creds.otherUdpPort));
    } else {
      blocked('direct-udp', 'not tested: the server did not name its other UDP port');
    }
    for (const transport of ['udp', 'tcp', 'tls']) {
      const uri = uris.find((u) => (transport === 'tls' ? /^turns:/i.test(u)
        : /^turn:/i.test(u) && new RegExp(`transport=${transport}`, 'i').test(u)));
      if (uri) probes.push(checkTurn(transport, uri, creds));
      else blocked(`turn-${transport}`, 'not tested: the server offered no such TURN URI');
    }
  }
  await Promise.all(probes);
  Object.assign(state, decide(state.checks));
  state.phase = 'done';
  render();
}

document.addEventListener('DOMContentLoaded', () => {
  $('origin').textContent = location.origin;
  $('run').addEventListener('click', () => { if (state.phase !== 'running') run(); });
  render();
  run();
});
