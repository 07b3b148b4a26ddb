// chat.js: ordering and de-duplication by (epoch, seq). Run with `node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ChatCursor, compareChatIds, withChatMessage } from '../../../src/meet443/web/static/js/chat.js';

function message(epoch, seq, text = `${epoch}/${seq}`, extra = {}) {
  return { type: 'chat', epoch, seq, from: 'p', displayName: 'P', text, ts: 1, clientMessageId: `c${text}`, ...extra };
}

function add(list, ...messages) {
  for (const m of messages) list = withChatMessage(list, m) ?? list;
  return list;
}

test('a restarted server counts seq from 1 again in a larger epoch: nothing is lost', () => {
  const before = add([], message(4294967296, 1), message(4294967296, 2), message(4294967296, 3));
  const after = add(before, message(8589934592, 1), message(8589934592, 2));
  assert.deepEqual(after.map((c) => c.text), ['4294967296/1', '4294967296/2', '4294967296/3', '8589934592/1', '8589934592/2']);
});

test('ordered by id and each once, whatever the arrival order', () => {
  const list = add([], message(2, 2), message(1, 5), message(2, 1), message(1, 5), message(2, 2));
  assert.deepEqual(list.map((c) => [c.epoch, c.seq]), [[1, 5], [2, 1], [2, 2]]);
  assert.equal(withChatMessage(list, message(2, 1)), null);
  assert.equal(withChatMessage(list, { type: 'chat', text: 'no id' }), null);
});

test('our pending messages come last and are replaced by their echo', () => {
  let list = [{ clientMessageId: 'mine', from: 'me', text: 'hello', pending: true }];
  list = add(list, message(1, 1, 'theirs'));
  assert.deepEqual(list.map((c) => [c.text, c.pending]), [['theirs', false], ['hello', true]]);
  list = add(list, message(1, 2, 'hello', { clientMessageId: 'mine', from: 'me' }));
  assert.deepEqual(list.map((c) => [c.text, c.pending]), [['theirs', false], ['hello', false]]);
});

test('a message without an epoch (an older server) counts as epoch 0', () => {
  const list = add([], { ...message(0, 3), epoch: undefined }, message(1, 1));
  assert.deepEqual(list.map((c) => [c.epoch, c.seq]), [[0, 3], [1, 1]]);
  assert.ok(compareChatIds({ epoch: 0, seq: 9 }, { epoch: 1, seq: 1 }) < 0);
});

test('the cursor names the newest id and its epoch for join', () => {
  const cursor = new ChatCursor();
  assert.deepEqual(cursor.joinFields(), {});
  for (const m of [message(1, 5), message(1, 3), message(2, 1)]) cursor.note(m);
  assert.deepEqual(cursor.joinFields(), { lastChatSeq: 1, lastChatEpoch: 2 });
});
