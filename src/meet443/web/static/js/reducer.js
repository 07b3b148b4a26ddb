// What a server message does to the page's state (docs/signaling.md "Server → client"), as a pure
// function: `receive(state, message)` changes the plain state object and returns the effects the
// wiring (room.js) must carry out — peer connections, the SFU, toasts, timers. No DOM, no network,
// no clock: node tests drive it with plain objects (tests/browser/js/reducer.test.mjs).

import { withChatMessage } from './chat.js';

/** How long a reaction stays over its sender's tile. */
export const REACTION_MS = 4000;
/** The emoji a `reaction` may carry (the server refuses any other). */
export const REACTIONS = ['👍', '👏', '❤️', '😂', '😮', '🎉'];

const LEAVE_REASONS = { kicked: 'was removed', timeout: 'lost the connection' };

/**
 * Apply one server message to `s`; returns a list of effects, each `{type, ...}`:
 * notify {text, kind}, finish {phase, failure?}, connections {fresh}, config {iceServers, policy},
 * mesh-add {id, polite}, mesh-remove {id}, mesh-handle {message}, mesh-prune {present},
 * sfu {message}, sfu-start, sfu-restart, send-media, mute-self {kind}, expire-reaction {key, ms}, error {message}.
 */
export function receive(s, m) {
  const fx = [];
  const group = () => s.room.mode === 'group';
  switch (m.type) {
    case 'joined':
      joined(s, m, fx);
      break;
    case 'knocking':
      s.phase = 'knocking';
      break;
    case 'knock':
      if (!s.knocks.some((k) => k.participantId === m.participantId)) {
        s.knocks.push({ participantId: m.participantId, displayName: m.displayName });
      }
      fx.push(notice(`${m.displayName} is asking to join.`));
      break;
    case 'knock-cancelled':
      dropKnock(s, m.participantId);
      break;
    case 'rejected':
      fx.push({ type: 'finish', phase: 'rejected' });
      break;
    case 'participant-joined':
      upsert(s, m.participant);
      if (!group()) fx.push({ type: 'mesh-add', id: m.participant.id, polite: true }); // the newcomer offers
      fx.push(notice(`${m.participant.displayName} joined.`));
      break;
    case 'participant-updated': {
      const before = s.participants[m.participant.id];
      upsert(s, m.participant);
      if (m.participant.hand && before && !before.hand && m.participant.id !== s.selfId) {
        fx.push(notice(`${m.participant.displayName} raised their hand.`));
      }
      break;
    }
    case 'participant-left':
      left(s, m, fx);
      break;
    case 'offer':
    case 'answer':
    case 'candidate':
      fx.push({ type: 'mesh-handle', message: m });
      break;
    case 'chat':
      addChat(s, m);
      break;
    case 'room-updated': {
      const was = !!s.room.locked;
      s.room = { ...s.room, ...m.room };
      if (was !== !!m.room.locked) fx.push(notice(m.room.locked ? 'The meeting is locked.' : 'The meeting is unlocked.'));
      break;
    }
    case 'mute-request':
      if (m.kind === 'audio' && s.local.audio) {
        fx.push({ type: 'mute-self', kind: 'audio' }, notice('A host muted your microphone.', 'warn'));
      } else if (m.kind === 'video' && s.local.video) {
        fx.push({ type: 'mute-self', kind: 'video' }, notice('A host turned off your camera.', 'warn'));
      }
      break;
    case 'reaction':
      reaction(s, m, fx);
      break;
    case 'kicked':
      fx.push({ type: 'finish', phase: 'kicked' });
      break;
    case 'ended':
      fx.push({ type: 'finish', phase: 'ended' });
      break;
    case 'ice-servers':
      fx.push({ type: 'config', iceServers: m.iceServers, policy: s.iceTransportPolicy });
      break;
    case 'speaker':
      s.speaker = m.participantId ?? null;
      break;
    case 'sfu-restart':
      // The SFU lost our media session (docs/signaling.md "SFU restart"): new connections, same id.
      if (group()) {
        s.sfuRestarts += 1;
        fx.push({ type: 'sfu-restart' });
      }
      break;
    case 'publish-answer':
    case 'subscribe-offer':
    case 'tracks':
    case 'republish':
      fx.push({ type: 'sfu', message: m });
      break;
    case 'error':
      fx.push({ type: 'error', message: m });
      break;
    default:
      break;
  }
  return fx;
}

function notice(text, kind = 'info') {
  return { type: 'notify', text, kind };
}

function joined(s, m, fx) {
  const fresh = !m.resumed;
  // A new identity: every connection starts over. Resumed: the server kept our place (and, in a
  // group room, our SFU state), so the connections stay.
  if (fresh) fx.push({ type: 'connections', fresh: true });
  s.iceTransportPolicy = m.iceTransportPolicy === 'relay' ? 'relay' : 'all';
  fx.push({ type: 'config', iceServers: m.iceServers, policy: s.iceTransportPolicy });
  const present = new Set(m.participants.map((p) => p.id));
  s.phase = 'in-call';
  s.selfId = m.selfId;
  s.host = !!m.host;
  s.room = { ...s.room, ...m.room };
  s.speaker = m.speaker ?? null;
  if (fresh) {
    s.participants = {};
    s.order = [];
    s.knocks = [];
    s.local.hand = false; // a new participant's hand is down
  } else {
    for (const id of Object.keys(s.participants)) {
      if (id !== m.selfId && !present.has(id)) delete s.participants[id];
    }
    s.order = s.order.filter((id) => id === m.selfId || present.has(id));
  }
  s.participants[m.selfId] = {
    id: m.selfId,
    displayName: s.displayName,
    host: !!m.host,
    audio: s.local.audio,
    video: s.local.video,
    screen: s.local.screen,
    hand: s.local.hand,
    connected: true,
    self: true,
  };
  if (!s.order.includes(m.selfId)) s.order.unshift(m.selfId);
  for (const p of m.participants) upsert(s, p);
  if (s.room.mode === 'group') {
    fx.push({ type: 'sfu-start' });
  } else {
    // Fresh: everyone here came first, so we are impolite and offer. Resumed: anyone we did not
    // know joined while we were away — they came later and will offer.
    for (const p of m.participants) fx.push({ type: 'mesh-add', id: p.id, polite: !fresh });
    if (!fresh) fx.push({ type: 'mesh-prune', present: [...present] });
  }
  for (const c of m.chat || []) addChat(s, c);
  fx.push({ type: 'send-media' });
}

function upsert(s, p) {
  const self = p.id === s.selfId;
  const old = s.participants[p.id] || {};
  s.participants[p.id] = { ...old, ...p, self };
  if (self) {
    s.host = !!p.host;
    s.participants[p.id].displayName = p.displayName || s.displayName;
  }
  if (!s.order.includes(p.id)) s.order.push(p.id);
}

function left(s, m, fx) {
  const p = s.participants[m.id];
  if (s.room.mode !== 'group') fx.push({ type: 'mesh-remove', id: m.id });
  delete s.participants[m.id];
  delete s.links[m.id]; // group rooms: the SFU hands this one's sections to others by itself
  s.order = s.order.filter((id) => id !== m.id);
  s.speaking = s.speaking.filter((id) => id !== m.id);
  if (s.speaker === m.id) s.speaker = null;
  if (s.pinned && (s.pinned === m.id || s.pinned === `${m.id}:screen`)) s.pinned = null;
  if (p) fx.push(notice(`${p.displayName} ${LEAVE_REASONS[m.reason] || 'left'}.`));
}

/**
 * The one place a chat message enters the state: ordered and de-duplicated by its (epoch, seq) id
 * (chat.js), ours confirmed; after a server restart the old messages stay and the new run's follow.
 */
export function addChat(s, m) {
  const chat = withChatMessage(s.chat, m);
  if (!chat) return;
  s.chat = chat;
  if (m.from !== s.selfId && s.panel !== 'chat') s.unread += 1;
}

function reaction(s, m, fx) {
  if (!s.participants[m.participantId] || !REACTIONS.includes(m.emoji)) return;
  s.reactionSeq += 1;
  const key = `r${s.reactionSeq}`;
  s.reactions.push({ key, participantId: m.participantId, emoji: m.emoji });
  fx.push({ type: 'expire-reaction', key, ms: REACTION_MS });
}

/** A reaction's time is up (the wiring's timer). */
export function expireReaction(s, key) {
  s.reactions = s.reactions.filter((r) => r.key !== key);
}

export function dropKnock(s, participantId) {
  s.knocks = s.knocks.filter((k) => k.participantId !== participantId);
}
