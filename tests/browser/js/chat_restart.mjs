// Two participants chat through the real client modules (signaling.js, chat.js) while the server
// restarts; driven by tests/browser/test_chat_restart.py, which serves the signaling socket.
//
//   node chat_restart.mjs ws://127.0.0.1:PORT/v1/ws
//
// Prints `restart` when the server may restart and waits for a line on stdin saying it did; at the
// end prints one JSON line: each participant's chat as [epoch, seq, text], in display order.

import { createInterface } from 'node:readline';

globalThis.window = new EventTarget(); // signaling.js listens for 'online' on it

const { withChatMessage } = await import('../../../src/meet443/web/static/js/chat.js');
const { SignalingClient } = await import('../../../src/meet443/web/static/js/signaling.js');

const url = process.argv[2];
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
setTimeout(() => {
  console.error('timed out');
  process.exit(2);
}, 20_000).unref();

function participant(displayName) {
  const p = { chat: [], status: null, joins: 0 };
  p.client = new SignalingClient({
    url,
    room: 'standup',
    displayName,
    handlers: {
      message(m) {
        if (m.type === 'joined') {
          p.joins += 1;
          for (const c of m.chat) p.chat = withChatMessage(p.chat, c) ?? p.chat;
        } else if (m.type === 'chat') {
          p.chat = withChatMessage(p.chat, m) ?? p.chat;
        }
      },
      status(s) {
        p.status = s;
      },
    },
  });
  p.client.start();
  return p;
}

async function until(what, predicate) {
  for (let i = 0; i < 1000; i += 1) {
    if (predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`never: ${what}`);
}

async function say(p, text) {
  p.client.sendChat(text);
  await until(`echo of ${text}`, () => p.client.outbox.size === 0);
}

const ann = participant('Ann');
await until('Ann joined', () => ann.joins === 1);
const bob = participant('Bob');
await until('Bob joined', () => bob.joins === 1);
for (const text of ['m1', 'm2', 'm3', 'm4', 'm5']) await say(ann, text);
await until('Bob has 5', () => bob.chat.length === 5);

console.log('restart');
await lines.next();
// Both resumes fail (the new server knows no resume token): each joins afresh.
await until('both joined again', () => ann.joins === 2 && bob.joins === 2);
for (const text of ['n1', 'n2']) await say(ann, text);
await until('Bob has 7', () => bob.chat.length === 7);

// Bob's socket drops; Ann writes while he is away; Bob resumes and gets what he missed.
bob.client.ws.close();
await until('Bob reconnecting', () => bob.status === 'reconnecting');
await say(ann, 'n3');
await until('Bob resumed with n3', () => bob.joins === 3 && bob.chat.length === 8).catch(() => {});

const view = (p) => p.chat.map((c) => [c.epoch, c.seq, c.text]);
console.log(JSON.stringify({ ann: view(ann), bob: view(bob) }));
ann.client.leave();
bob.client.leave();
stdin.close();
setTimeout(() => process.exit(0), 300);
