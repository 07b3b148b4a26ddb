// Chat messages in order and each once (docs/signaling.md `chat`). Pure: no DOM, no socket.
//
// A message's id is (epoch, seq): `seq` counts from 1 in a room and `epoch` grows whenever the
// room's chat starts again — after a server restart, or when the room emptied and was made again.
// So a restarted server's message 1 is a new message, not a repeat of the old message 1, and it
// comes after everything of the earlier epoch.

/** The id of a server `chat` message as `{epoch, seq}`, or null if it has none. */
export function chatId(message) {
  if (!Number.isInteger(message.seq)) return null;
  return { epoch: Number.isInteger(message.epoch) ? message.epoch : 0, seq: message.seq };
}

/** Orders two ids (or entries that carry `epoch` and `seq`). */
export function compareChatIds(a, b) {
  return a.epoch - b.epoch || a.seq - b.seq;
}

/**
 * The chat list with a server `chat` message in it: confirmed messages ordered by id, then our own
 * unconfirmed ones (`pending`, sent but not yet echoed) in the order they were typed. The echo of
 * one of ours replaces its pending entry (same `clientMessageId`). Returns null, and `list` is
 * unchanged, when the message has no id or is there already.
 */
export function withChatMessage(list, message) {
  const id = chatId(message);
  if (!id) return null;
  const confirmed = list.filter((c) => !c.pending);
  if (confirmed.some((c) => compareChatIds(c, id) === 0)) return null;
  confirmed.push({
    epoch: id.epoch,
    seq: id.seq,
    from: message.from,
    displayName: message.displayName,
    text: message.text,
    ts: message.ts,
    clientMessageId: message.clientMessageId || `${id.epoch}-${id.seq}`,
    pending: false,
  });
  confirmed.sort(compareChatIds);
  const pending = list.filter((c) => c.pending && c.clientMessageId !== message.clientMessageId);
  return [...confirmed, ...pending];
}

/**
 * The newest chat id seen, for `join`: with `lastChatEpoch` the server sends only what came after
 * it when it is the room's current epoch, and its recent history otherwise (a restart).
 */
export class ChatCursor {
  constructor() {
    this.last = null;
  }

  note(message) {
    const id = chatId(message);
    if (id && (!this.last || compareChatIds(id, this.last) > 0)) this.last = id;
  }

  joinFields() {
    return this.last ? { lastChatSeq: this.last.seq, lastChatEpoch: this.last.epoch } : {};
  }
}
