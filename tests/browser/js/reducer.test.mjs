// The pure parts of the meeting page: the server-message reducer (reducer.js), speaking detection
// (levels.js) and links in chat (links.js). Run with `node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SpeakingDetector, rms } from '../../../src/meet443/web/static/js/levels.js';
import { linkParts } from '../../../src/meet443/web/static/js/links.js';
import { REACTION_MS, expireReaction, receive } from '../../../src/meet443/web/static/js/reducer.js';

/** The state.js shape, fresh for each test. */
function fresh(overrides = {}) {
  return {
    phase: 'joining',
    displayName: 'Ann',
    selfId: null,
    host: false,
    room: { name: '', mode: 'normal', locked: false, maxParticipants: 4 },
    iceTransportPolicy: 'all',
    participants: {},
    order: [],
    knocks: [],
    chat: [],
    unread: 0,
    local: { audio: true, video: true, screen: false, hand: false },
    links: {},
    speaker: null,
    speaking: [],
    reactions: [],
    reactionSeq: 0,
    sfuRestarts: 0,
    pinned: null,
    panel: null,
    ...overrides,
  };
}

const person = (id, name, more = {}) => ({
  id,
  displayName: name,
  host: false,
  audio: true,
  video: true,
  screen: false,
  connected: true,
  hand: false,
  ...more,
});

function joined(more = {}) {
  return {
    type: 'joined',
    selfId: 'me',
    resumeToken: 't',
    resumed: false,
    room: { name: 'r', mode: 'normal', locked: false, maxParticipants: 4 },
    host: false,
    participants: [person('p1', 'Bob')],
    iceServers: [],
    iceTransportPolicy: 'all',
    chat: [],
    speaker: null,
    ...more,
  };
}

const types = (fx) => fx.map((e) => e.type);

test('joined (fresh, peer to peer): in the call, offers to everyone there, reports media', () => {
  const s = fresh();
  const fx = receive(s, joined());
  assert.equal(s.phase, 'in-call');
  assert.deepEqual(s.order, ['me', 'p1']);
  assert.equal(s.participants.me.self, true);
  assert.deepEqual(types(fx), ['connections', 'config', 'mesh-add', 'send-media']);
  assert.deepEqual(fx[2], { type: 'mesh-add', id: 'p1', polite: false });
});

test('joined (resumed): keeps connections, drops who left, the others offer', () => {
  const s = fresh();
  receive(s, joined({ participants: [person('p1', 'Bob'), person('p2', 'Cy')] }));
  const fx = receive(s, joined({ resumed: true, participants: [person('p2', 'Cy'), person('p3', 'Di')] }));
  assert.deepEqual(s.order, ['me', 'p2', 'p3']);
  assert.ok(!('p1' in s.participants));
  assert.ok(!types(fx).includes('connections'));
  assert.deepEqual(
    fx.filter((e) => e.type === 'mesh-add').map((e) => [e.id, e.polite]),
    [['p2', true], ['p3', true]],
  );
  assert.deepEqual(fx.find((e) => e.type === 'mesh-prune').present, ['p2', 'p3']);
});

test('joined in a group room: the SFU starts and the current speaker shows at once', () => {
  const s = fresh();
  const fx = receive(s, joined({ room: { name: 'r', mode: 'group', locked: false, maxParticipants: 50 }, speaker: 'p1' }));
  assert.equal(s.speaker, 'p1');
  assert.ok(types(fx).includes('sfu-start'));
  assert.ok(!types(fx).includes('mesh-add'));
  receive(s, { type: 'speaker', participantId: null });
  assert.equal(s.speaker, null);
});

test('sfu-restart starts the SFU session over in a group room, and means nothing peer to peer', () => {
  const s = fresh();
  receive(s, joined({ room: { name: 'r', mode: 'group', locked: false, maxParticipants: 50 } }));
  assert.deepEqual(receive(s, { type: 'sfu-restart' }), [{ type: 'sfu-restart' }]);
  assert.equal(s.sfuRestarts, 1);
  assert.equal(s.selfId, 'me');
  const p2p = fresh();
  receive(p2p, joined());
  assert.deepEqual(receive(p2p, { type: 'sfu-restart' }), []);
  assert.equal(p2p.sfuRestarts, 0);
});

test('a fresh join puts the hand down; a resume keeps it', () => {
  const s = fresh();
  s.local.hand = true;
  receive(s, joined({ resumed: true }));
  assert.equal(s.participants.me.hand, true);
  receive(s, joined());
  assert.equal(s.local.hand, false);
  assert.equal(s.participants.me.hand, false);
});

test('participants joining, raising a hand and leaving', () => {
  const s = fresh();
  receive(s, joined());
  let fx = receive(s, { type: 'participant-joined', participant: person('p2', 'Cy') });
  assert.deepEqual(fx[0], { type: 'mesh-add', id: 'p2', polite: true });
  assert.equal(fx[1].text, 'Cy joined.');
  fx = receive(s, { type: 'participant-updated', participant: person('p2', 'Cy', { hand: true }) });
  assert.deepEqual(fx, [{ type: 'notify', text: 'Cy raised their hand.', kind: 'info' }]);
  assert.equal(s.participants.p2.hand, true);
  fx = receive(s, { type: 'participant-updated', participant: person('p2', 'Cy', { hand: true, audio: false }) });
  assert.deepEqual(fx, [], 'no second toast for the same hand');
  s.pinned = 'p2';
  s.speaking = ['p2'];
  fx = receive(s, { type: 'participant-left', id: 'p2', reason: 'timeout' });
  assert.deepEqual(types(fx), ['mesh-remove', 'notify']);
  assert.equal(fx[1].text, 'Cy lost the connection.');
  assert.equal(s.pinned, null, 'a pinned tile that left unpins');
  assert.deepEqual(s.speaking, []);
  assert.deepEqual(s.order, ['me', 'p1']);
});

test('chat: server order, confirmation of our own, unread only while the chat is closed', () => {
  const s = fresh();
  receive(s, joined());
  s.chat.push({ clientMessageId: 'c1', from: 'me', text: 'mine', pending: true });
  receive(s, { type: 'chat', seq: 2, from: 'p1', displayName: 'Bob', text: 'b', ts: 2, clientMessageId: 'x' });
  receive(s, { type: 'chat', seq: 1, from: 'p1', displayName: 'Bob', text: 'a', ts: 1, clientMessageId: 'y' });
  receive(s, { type: 'chat', seq: 1, from: 'p1', displayName: 'Bob', text: 'a', ts: 1, clientMessageId: 'y' });
  assert.deepEqual(s.chat.map((c) => c.text), ['a', 'b', 'mine']);
  assert.equal(s.unread, 2);
  receive(s, { type: 'chat', seq: 3, from: 'me', displayName: 'Ann', text: 'mine', ts: 3, clientMessageId: 'c1' });
  assert.deepEqual(s.chat.map((c) => [c.text, c.pending]), [['a', false], ['b', false], ['mine', false]]);
  assert.equal(s.unread, 2, 'our own message is not unread');
  s.panel = 'chat';
  receive(s, { type: 'chat', seq: 4, from: 'p1', displayName: 'Bob', text: 'c', ts: 4, clientMessageId: 'z' });
  assert.equal(s.unread, 2);
});

test('reactions show for a while, only listed emoji from people in the room', () => {
  const s = fresh();
  receive(s, joined());
  const fx = receive(s, { type: 'reaction', participantId: 'p1', emoji: '🎉' });
  assert.deepEqual(s.reactions, [{ key: 'r1', participantId: 'p1', emoji: '🎉' }]);
  assert.deepEqual(fx, [{ type: 'expire-reaction', key: 'r1', ms: REACTION_MS }]);
  assert.deepEqual(receive(s, { type: 'reaction', participantId: 'p1', emoji: '<b>' }), []);
  assert.deepEqual(receive(s, { type: 'reaction', participantId: 'ghost', emoji: '👍' }), []);
  expireReaction(s, 'r1');
  assert.deepEqual(s.reactions, []);
});

test('host actions, terminal messages and errors become effects', () => {
  const s = fresh();
  receive(s, joined());
  assert.deepEqual(receive(s, { type: 'mute-request', kind: 'audio', by: 'p1' })[0], { type: 'mute-self', kind: 'audio' });
  s.local.video = false;
  assert.deepEqual(receive(s, { type: 'mute-request', kind: 'video', by: 'p1' }), [], 'already off');
  assert.deepEqual(receive(s, { type: 'kicked' }), [{ type: 'finish', phase: 'kicked' }]);
  assert.deepEqual(receive(s, { type: 'ended' }), [{ type: 'finish', phase: 'ended' }]);
  const error = { type: 'error', code: 'room-full', message: 'full' };
  assert.deepEqual(receive(s, error), [{ type: 'error', message: error }]);
  const fx = receive(s, { type: 'room-updated', room: { locked: true } });
  assert.equal(s.room.locked, true);
  assert.equal(fx[0].text, 'The meeting is locked.');
  receive(s, { type: 'knock', participantId: 'k', displayName: 'Kim' });
  receive(s, { type: 'knock', participantId: 'k', displayName: 'Kim' });
  assert.equal(s.knocks.length, 1);
  receive(s, { type: 'knock-cancelled', participantId: 'k' });
  assert.deepEqual(s.knocks, []);
});

test('speaking: a level above the threshold, held between words, dropped after the hold', () => {
  const d = new SpeakingDetector({ threshold: 0.05, holdMs: 500 });
  assert.deepEqual(d.update(new Map([['a', 0.2], ['b', 0.01]]), 0), ['a']);
  assert.deepEqual(d.update(new Map([['a', 0.0], ['b', 0.3]]), 400), ['a', 'b']);
  assert.deepEqual(d.update(new Map([['a', 0.0], ['b', 0.0]]), 600), ['b']);
  assert.deepEqual(d.update(new Map([['b', 0.0]]), 1000), []);
  assert.deepEqual(d.update(new Map(), 1000), []);
});

test('rms of byte samples centred on 128', () => {
  assert.equal(rms(new Uint8Array([128, 128, 128])), 0);
  assert.equal(rms(new Uint8Array([0, 0])), 1);
  assert.equal(rms(new Uint8Array([])), 0);
});

test('links in chat: http and https only, sentence punctuation left outside', () => {
  assert.deepEqual(linkParts('see https://example.org/a?b=1. ok'), [
    { text: 'see ' },
    { text: 'https://example.org/a?b=1', href: 'https://example.org/a?b=1' },
    { text: '. ok' },
  ]);
  assert.deepEqual(linkParts('javascript:alert(1) and data:text/html,x'), [{ text: 'javascript:alert(1) and data:text/html,x' }]);
  assert.deepEqual(linkParts('(http://a.example)'), [
    { text: '(' },
    { text: 'http://a.example', href: 'http://a.example/' },
    { text: ')' },
  ]);
  assert.deepEqual(linkParts('https://en.wikipedia.org/wiki/Mercury_(planet)')[0].href, 'https://en.wikipedia.org/wiki/Mercury_(planet)');
  assert.deepEqual(linkParts('<img src=x onerror=alert(1)> https://x.example/"><b>'), [
    { text: '<img src=x onerror=alert(1)> ' },
    { text: 'https://x.example/', href: 'https://x.example/' },
    { text: '"><b>' },
  ]);
  assert.deepEqual(linkParts('no links'), [{ text: 'no links' }]);
});
