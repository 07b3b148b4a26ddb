// The signaling client against a fake WebSocket: join, resume, queueing, chat outbox, terminal
// messages. Run with `node --test`.

import assert from 'node:assert/strict';
import { afterEach, beforeEach, mock, test } from 'node:test';

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  static all = [];

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    FakeWebSocket.all.push(this);
  }

  send(data) {
    assert.equal(this.readyState, FakeWebSocket.OPEN, 'send on a socket that is not open');
    this.sent.push(JSON.parse(data));
  }

  close() {
    if (this.readyState === FakeWebSocket.CLOSED) return;
    this.readyState = FakeWebSocket.CLOSED;
    if (this.onclose) this.onclose({ code: 1006 });
  }

  // Test side
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen();
  }

  receive(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }

  drop(code = 1006) {
    this.readyState = FakeWebSocket.CLOSED;
    if (this.onclose) this.onclose({ code });
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.window = new EventTarget();
const { SignalingClient, TERMINAL_ERRORS } = await import('../../../src/meet443/web/static/js/signaling.js');

function joined(extra = {}) {
  return {
    type: 'joined', selfId: 'me', resumeToken: 'tok-1', resumed: false, host: true,
    room: { name: 'r', mode: 'normal', locked: false, maxParticipants: 4 },
    participants: [], iceServers: [], iceTransportPolicy: 'all', chat: [], ...extra,
  };
}

let messages;
let statuses;
let client;

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  FakeWebSocket.all = [];
  messages = [];
  statuses = [];
  client = new SignalingClient({
    url: 'wss://h/v1/ws',
    room: 'r',
    displayName: 'Ann',
    roomKey: 'k',
    handlers: { message: (m) => messages.push(m), status: (s, d) => statuses.push([s, d]) },
  });
});

afterEach(() => {
  client.stop();
  mock.timers.reset();
});

test('joins with v:1, room, name and key', () => {
  client.start();
  const ws = FakeWebSocket.all[0];
  assert.equal(ws.url, 'wss://h/v1/ws');
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'join', v: 1, room: 'r', displayName: 'Ann', roomKey: 'k' }]);
  ws.receive(joined());
  assert.equal(messages[0].type, 'joined');
  assert.deepEqual(statuses.at(-1), ['open', { resumed: false }]);
});

test('a dropped socket reconnects with the resume token and the last chat seq', () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  ws.receive({ type: 'chat', seq: 7, from: 'x', displayName: 'X', text: 'hi', ts: 1, clientMessageId: 'c' });
  ws.drop();
  assert.equal(statuses.at(-1)[0], 'reconnecting');
  // Messages for peers wait for the next socket.
  client.send({ type: 'candidate', to: 'p', candidate: null });
  mock.timers.tick(10_000);
  ws = FakeWebSocket.all[1];
  assert.ok(ws, 'reconnected');
  ws.open();
  assert.deepEqual(ws.sent[0], {
    type: 'join', v: 1, room: 'r', displayName: 'Ann', roomKey: 'k', resumeToken: 'tok-1', lastChatSeq: 7,
    lastChatEpoch: 0,
  });
  ws.receive(joined({ resumed: true, resumeToken: 'tok-2' }));
  assert.deepEqual(ws.sent.slice(1), [{ type: 'candidate', to: 'p', candidate: null }]);
  assert.equal(client.resumeToken, 'tok-2');
});

test('a new identity after a failed resume drops what was queued for the old one', () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  ws.drop();
  client.send({ type: 'offer', to: 'p', sdp: 'v=0' });
  mock.timers.tick(10_000);
  ws = FakeWebSocket.all[1];
  ws.open();
  ws.receive(joined({ selfId: 'me2', resumed: false }));
  assert.deepEqual(ws.sent.map((m) => m.type), ['join']);
});

test('chat is resent after a reconnect until the server echoes it', () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  const id = client.sendChat('hello');
  assert.deepEqual(ws.sent.at(-1), { type: 'chat', text: 'hello', clientMessageId: id });
  ws.drop();
  const offline = client.sendChat('typed offline');
  mock.timers.tick(10_000);
  ws = FakeWebSocket.all[1];
  ws.open();
  ws.receive(joined({ resumed: true }));
  assert.deepEqual(
    ws.sent.filter((m) => m.type === 'chat').map((m) => [m.text, m.clientMessageId]),
    [['hello', id], ['typed offline', offline]],
  );
  ws.receive({ type: 'chat', seq: 1, from: 'me', displayName: 'Ann', text: 'hello', ts: 1, clientMessageId: id });
  ws.receive({ type: 'chat', seq: 2, from: 'me', displayName: 'Ann', text: 'typed offline', ts: 2, clientMessageId: offline });
  assert.equal(client.outbox.size, 0);
});

test('heartbeat pings every 10 s', () => {
  client.start();
  const ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  mock.timers.tick(10_000);
  assert.deepEqual(ws.sent.at(-1), { type: 'ping' });
});

test('kicked, ended, rejected and terminal errors stop reconnecting', () => {
  for (const final of [
    { type: 'kicked' },
    { type: 'ended' },
    { type: 'rejected' },
    ...[...TERMINAL_ERRORS].map((code) => ({ type: 'error', code, message: code })),
  ]) {
    FakeWebSocket.all = [];
    const c = new SignalingClient({
      url: 'wss://h/v1/ws', room: 'r', displayName: 'Ann',
      handlers: { message: () => {}, status: () => {} },
    });
    c.start();
    const ws = FakeWebSocket.all[0];
    ws.open();
    ws.receive(final);
    ws.drop(1000);
    mock.timers.tick(60_000);
    assert.equal(FakeWebSocket.all.length, 1, `${JSON.stringify(final)} must not reconnect`);
  }
});

test('a non-terminal error keeps the socket', () => {
  client.start();
  const ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  ws.receive({ type: 'error', code: 'not-host', message: 'x' });
  assert.equal(client.stopped, false);
  assert.equal(messages.at(-1).code, 'not-host');
});

test('leave sends leave and never reconnects', () => {
  client.start();
  const ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  client.leave();
  assert.deepEqual(ws.sent.at(-1), { type: 'leave' });
  mock.timers.tick(60_000);
  assert.equal(FakeWebSocket.all.length, 1);
});

test('the join waits for beforeJoin (the region probe) on an open socket, then carries its fields', async () => {
  let release;
  const probe = new SignalingClient({
    url: 'wss://h/v1/ws',
    room: 'r',
    displayName: 'Ann',
    handlers: { message: () => {}, status: () => {} },
    joinFields: () => ({ rtts: { eu: 12.5 } }),
    beforeJoin: () => new Promise((resolve) => { release = resolve; }),
  });
  probe.start();
  const ws = FakeWebSocket.all.at(-1);
  ws.open();
  await Promise.resolve();
  assert.deepEqual(ws.sent, [], 'no join while the regions are being measured');
  release();
  await new Promise((r) => setImmediate(r));
  assert.equal(ws.sent.length, 1);
  assert.deepEqual(ws.sent[0].rtts, { eu: 12.5 });
  assert.equal(ws.sent[0].type, 'join');
  probe.stop();
});

test('1012 (service restart): back within 300 ms, then about every second for 30 s', () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  ws.drop(1012);
  const delays = [statuses.at(-1)[1].delay];
  assert.ok(delays[0] >= 150 && delays[0] <= 300, `first try after ${delays[0]} ms`);
  // The server is not back yet: every try fails; the delays stay short for the resume window.
  for (let i = 0; i < 20; i += 1) {
    mock.timers.tick(1_000);
    ws = FakeWebSocket.all.at(-1);
    ws.drop(1006);
    delays.push(statuses.at(-1)[1].delay);
  }
  assert.ok(delays.slice(1).every((d) => d >= 500 && d <= 1_000), delays.join(' '));
  mock.timers.tick(1_000);
  ws = FakeWebSocket.all.at(-1);
  ws.open();
  assert.equal(ws.sent[0].resumeToken, 'tok-1');
  ws.receive(joined({ resumed: true }));
  assert.equal(client.restartingSince, null);
});

test('a joined socket dropped without a close frame (its node died) comes back as fast as after 1012', () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.drop(1006); // never joined: the server is not there at all, back off
  assert.equal(client.restartingSince, null);
  mock.timers.tick(1_000);
  ws = FakeWebSocket.all.at(-1);
  ws.open();
  ws.receive(joined());
  ws.drop(1006);
  assert.notEqual(client.restartingSince, null);
  const delay = statuses.at(-1)[1].delay;
  assert.ok(delay >= 150 && delay <= 300, `first try after ${delay} ms`);
});

test('after the resume window a restart backs off as any other drop', () => {
  const t0 = Date.now();
  client.restartingSince = t0;
  client.attempts = 6;
  assert.ok(client.retryDelay(0.5, t0 + 29_000) <= 1_000);
  assert.ok(client.retryDelay(0.5, t0 + 31_000) >= 6_000);
  client.restartingSince = null;
  client.attempts = 1;
  assert.ok(client.retryDelay(0.5) === 500);
});

test('barrier: resolved by the pong of its own ping, not by an earlier one', async () => {
  client.start();
  const ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  mock.timers.tick(10_000); // a heartbeat ping, not yet answered
  let open = false;
  client.barrier().then(() => {
    open = true;
  });
  assert.deepEqual(ws.sent.slice(-2), [{ type: 'ping' }, { type: 'ping' }]);
  ws.receive({ type: 'pong' }); // the heartbeat's
  await Promise.resolve();
  assert.equal(open, false);
  ws.receive({ type: 'pong' });
  await Promise.resolve();
  assert.equal(open, true);
});

test('barrier: queued while reconnecting, sent after the join; a dropped socket opens it', async () => {
  client.start();
  let ws = FakeWebSocket.all[0];
  ws.open();
  ws.receive(joined());
  ws.drop();
  let open = 0;
  client.barrier().then(() => {
    open += 1;
  });
  mock.timers.tick(1_000);
  ws = FakeWebSocket.all[1];
  ws.open();
  ws.receive(joined({ resumed: true }));
  assert.deepEqual(ws.sent.map((m) => m.type), ['join', 'ping']);
  await Promise.resolve();
  assert.equal(open, 0);
  client.barrier().then(() => {
    open += 1;
  });
  ws.receive({ type: 'pong' });
  await Promise.resolve();
  assert.equal(open, 1);
  ws.drop(); // the second barrier's ping will get no pong
  await Promise.resolve();
  assert.equal(open, 2);
});
