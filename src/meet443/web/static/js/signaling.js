// The signaling client (docs/signaling.md, protocol v1): one WebSocket, one participant.
//
// It keeps the participant alive across network trouble: a heartbeat finds dead sockets, a lost
// socket is reopened with backoff and the `resumeToken`, so the server gives back the same
// participant id and the chat messages missed meanwhile. Messages for peers sent while the socket
// is down wait in a queue; chat messages stay in an outbox until the server echoes them with an id
// (the server drops duplicates by clientMessageId, so resending is safe). A server that restarts
// closes with 1012 and keeps its rooms for the 30 s resume window: the client comes back within a
// second and retries every second or so until then, so it resumes as the same participant. If
// the resume fails (a server that lost its state) the client joins afresh; the chat cursor
// (chat.js) tells the new server which epoch its `lastChatSeq` counts in.

import { ChatCursor } from './chat.js';

export const PROTOCOL_VERSION = 1;
export const PING_INTERVAL_MS = 10_000;
/** The server treats 30 s of silence as a drop; give up on a socket a little earlier. */
export const SILENCE_LIMIT_MS = 25_000;
export const CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 8_000;
/** RFC 6455 §7.4: the server is restarting (docs/signaling.md "Node restarts"). */
export const CLOSE_SERVICE_RESTART = 1012;
/** RFC 6455 §7.4.1: the socket ended without a close frame (the server, or the path, died). */
export const CLOSE_ABNORMAL = 1006;
/**
 * After a 1012 (or a 1006 in the room): the first try within this long, jittered so a room does not
 * come back at once; short, since failing over to another node must take under 5 s in all...
 */
const RESTART_FIRST_MS = 300;
/** ...then one about every second, for as long as the server keeps our place. */
const RESTART_RETRY_MS = 1_000;
export const RESUME_WINDOW_MS = 30_000;
/** A barrier whose pong never comes (a server that does not answer) opens after this long. */
const BARRIER_TIMEOUT_MS = 5_000;
const QUEUE_LIMIT = 500;

/** Error codes after which the server closes the socket and trying again cannot help. */
export const TERMINAL_ERRORS = new Set([
  'unsupported-version', 'bad-room-name', 'room-not-found', 'room-full', 'meeting-ended',
  'too-many-joins', 'knock-timeout',
]);
/** Server messages that end this participant for good; the socket closes after them. */
const TERMINAL_MESSAGES = new Set(['kicked', 'ended', 'rejected']);

export function signalingUrl(loc = window.location) {
  return `wss://${loc.host}/v1/ws`;
}

function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class SignalingClient {
  /**
   * handlers: {message(msg), status(status, detail)}; status is one of
   * 'connecting' | 'open' | 'reconnecting' | 'closed'.
   */
  /**
   * `joinFields()` adds to each `join` (the regions' round trips: regions.js); `beforeJoin()`, a
   * promise the open socket waits for before sending `join` (the region probe's short wait).
   */
  constructor({ url, room, displayName, roomKey = null, handlers, WebSocketImpl = WebSocket, joinFields = () => ({}), beforeJoin = null }) {
    this.url = url;
    this.room = room;
    this.displayName = displayName;
    this.roomKey = roomKey;
    this.handlers = handlers;
    this.WebSocketImpl = WebSocketImpl;
    this.joinFields = joinFields;
    this.beforeJoin = beforeJoin;
    this.ws = null;
    this.joined = false;
    this.selfId = null;
    this.resumeToken = null;
    this.chat = new ChatCursor();
    this.queue = []; // peer messages waiting for a joined socket
    this.outbox = new Map(); // clientMessageId -> text, until echoed with a seq
    this.attempts = 0;
    this.stopped = false;
    this.lastHeard = 0;
    this.restartingSince = null; // when the server said it restarts (1012)
    this.pongsDue = []; // per ping on this socket, oldest first: the barrier it opens, or null
    this.barrierPings = new Map(); // a barrier's ping (queued or not yet sent) -> its resolve
    this.timers = { ping: null, retry: null, connect: null };
    this.onOnline = () => this.reconnectNow();
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  connect() {
    clearTimeout(this.timers.retry);
    this.handlers.status(this.attempts === 0 && !this.selfId ? 'connecting' : 'reconnecting', {
      attempts: this.attempts,
    });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (err) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.joined = false;
    this.timers.connect = setTimeout(() => {
      if (this.ws === ws && ws.readyState !== WebSocket.OPEN) ws.close();
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      clearTimeout(this.timers.connect);
      this.lastHeard = Date.now();
      const sendJoin = () => {
        if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
        const join = { type: 'join', v: PROTOCOL_VERSION, room: this.room, displayName: this.displayName };
        if (this.roomKey) join.roomKey = this.roomKey;
        if (this.resumeToken) join.resumeToken = this.resumeToken;
        this.rawSend({ ...join, ...this.chat.joinFields(), ...this.joinFields() });
        this.startHeartbeat();
      };
      // The socket opens while the regions are still being measured; the join waits for them.
      if (this.beforeJoin) this.beforeJoin().then(sendJoin);
      else sendJoin();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string') return;
      this.receive(msg);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      const wasJoined = this.joined;
      this.dropSocket();
      if (this.stopped) return;
      if (event.code === 1008 || event.code === 1002) {
        // Policy violation or protocol error: retrying would only repeat it.
        this.stop();
        this.handlers.status('closed', { code: event.code });
        return;
      }
      // A socket that was in the room and dropped without a close frame (1006): its node may have
      // died, and the room is being taken over by another (docs/cluster.md "Failover"); come back
      // as fast as after a restart, to resume within the window.
      if (event.code === CLOSE_SERVICE_RESTART || (event.code === CLOSE_ABNORMAL && wasJoined)) {
        this.restartingSince = Date.now();
      }
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows and decides */
    };
  }

  receive(msg) {
    switch (msg.type) {
      case 'joined':
        if (this.selfId && !msg.resumed) {
          // A new identity: whatever we queued was addressed as the old one.
          this.queue = [];
        }
        this.joined = true;
        this.attempts = 0;
        this.restartingSince = null;
        this.selfId = msg.selfId;
        this.resumeToken = msg.resumeToken || null;
        for (const m of msg.chat || []) this.noteChat(m);
        this.handlers.status('open', { resumed: !!msg.resumed });
        this.handlers.message(msg);
        this.flush();
        return;
      case 'chat':
        this.noteChat(msg);
        break;
      case 'pong': {
        const open = this.pongsDue.shift();
        if (open) open();
        return;
      }
      case 'error':
        if (TERMINAL_ERRORS.has(msg.code)) this.stop();
        break;
      default:
        if (TERMINAL_MESSAGES.has(msg.type)) this.stop();
    }
    this.handlers.message(msg);
  }

  noteChat(msg) {
    this.chat.note(msg);
    if (msg.clientMessageId && msg.from === this.selfId) this.outbox.delete(msg.clientMessageId);
  }

  /** Sends now if joined; otherwise keeps the message for the next joined socket. */
  send(msg) {
    if (this.joined && this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.rawSend(msg);
    } else if (!this.stopped) {
      this.queue.push(msg);
      if (this.queue.length > QUEUE_LIMIT) this.queue.shift();
    }
  }

  /** Sends a chat message; it is resent after every reconnect until the server echoes it. */
  sendChat(text) {
    const clientMessageId = randomId();
    this.outbox.set(clientMessageId, text);
    if (this.joined) this.rawSend({ type: 'chat', text, clientMessageId });
    return clientMessageId;
  }

  flush() {
    for (const [clientMessageId, text] of this.outbox) {
      this.rawSend({ type: 'chat', text, clientMessageId });
    }
    const queued = this.queue;
    this.queue = [];
    for (const msg of queued) this.rawSend(msg);
  }

  rawSend(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify(msg));
    if (msg.type === 'ping') {
      this.pongsDue.push(this.barrierPings.get(msg) || null);
      this.barrierPings.delete(msg);
    }
  }

  /**
   * Resolves once the server has handled everything sent before it: it answers pings with pongs,
   * in order, after the messages before them. (A group room's new SFU session waits for this, so
   * that the answers to its old session's requests cannot be taken for its own.) A socket that
   * drops, or a server that never answers, opens it too.
   */
  barrier() {
    return new Promise((resolve) => {
      const ping = { type: 'ping' };
      this.barrierPings.set(ping, resolve);
      this.send(ping);
      setTimeout(() => {
        this.barrierPings.delete(ping);
        resolve();
      }, BARRIER_TIMEOUT_MS);
    });
  }

  startHeartbeat() {
    clearInterval(this.timers.ping);
    this.timers.ping = setInterval(() => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        // No pong and nothing else: the path is dead even if TCP has not noticed yet.
        this.reconnectNow();
        return;
      }
      this.rawSend({ type: 'ping' });
    }, PING_INTERVAL_MS);
  }

  dropSocket() {
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.connect);
    // Pings on a dead socket get no pong; whatever waited on them need not wait any longer.
    for (const open of this.pongsDue) if (open) open();
    this.pongsDue = [];
    const ws = this.ws;
    this.ws = null;
    this.joined = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
        try {
          ws.close();
        } catch {
          /* already closing */
        }
      }
    }
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.attempts += 1;
    const delay = this.retryDelay(Math.random());
    this.handlers.status('reconnecting', { attempts: this.attempts, delay });
    clearTimeout(this.timers.retry);
    this.timers.retry = setTimeout(() => this.connect(), delay);
  }

  /**
   * How long before the next try, `jitter` in [0, 1): exponential backoff, except while a
   * restarting server keeps our place (30 s after its 1012), when it is a second at most.
   */
  retryDelay(jitter, now = Date.now()) {
    if (this.restartingSince !== null && now - this.restartingSince < RESUME_WINDOW_MS) {
      return (this.attempts <= 1 ? RESTART_FIRST_MS : RESTART_RETRY_MS) * (0.5 + jitter * 0.5);
    }
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (this.attempts - 1));
    return base * (0.75 + jitter * 0.5);
  }

  /** The network came back (or the socket is known dead): try again without waiting. */
  reconnectNow() {
    if (this.stopped) return;
    if (this.ws && this.joined && this.ws.readyState === WebSocket.OPEN && Date.now() - this.lastHeard < SILENCE_LIMIT_MS) {
      return;
    }
    this.dropSocket();
    this.attempts += 1;
    this.connect();
  }

  /** Leaves the room for good: `leave`, then close. */
  leave() {
    if (this.joined) this.rawSend({ type: 'leave' });
    this.stop();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.timers.retry);
    const ws = this.ws;
    // Let a server's final message and close frame arrive; just stop reacting to the close.
    if (ws) {
      clearInterval(this.timers.ping);
      clearTimeout(this.timers.connect);
      ws.onclose = null;
      setTimeout(() => {
        if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      }, 250);
    }
    this.joined = false;
  }
}
