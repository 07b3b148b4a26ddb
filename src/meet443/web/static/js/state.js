// The page's one plain state object. Every module changes it through `update`, which schedules a
// single render; the render functions in ui.js read it and touch the DOM. MediaStreams are not
// plain data, so they live beside it in `streams` (keyed like the participants).

export const state = {
  // 'loading' | 'prejoin' | 'joining' | 'knocking' | 'in-call' | 'left' | 'ended' | 'kicked'
  // | 'rejected' | 'failed'
  phase: 'loading',
  roomName: '',
  displayName: '',
  selfId: null,
  host: false,
  room: { name: '', mode: 'normal', locked: false, maxParticipants: 4 },
  // 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'
  signaling: 'idle',
  reconnectAttempts: 0,
  iceTransportPolicy: 'all', // what the server asks for ('relay' with --force-relay)
  // id -> {id, displayName, host, audio, video, screen, connected, hand, self}
  participants: {},
  order: [], // participant ids in the order they were first seen; self first
  knocks: [], // [{participantId, displayName}] (hosts only)
  chat: [], // [{seq?, from, displayName, text, ts, clientMessageId, pending}]
  unread: 0,
  local: {
    audio: true,
    video: true,
    screen: false,
    hand: false,
    error: null, // null | 'denied' | 'not-found' | 'in-use' | 'unsupported' | 'screen-failed'
    devices: { audioinput: [], videoinput: [], audiooutput: [] },
    selected: { audioinput: '', videoinput: '', audiooutput: '' },
    hasAudio: false,
    hasVideo: false,
  },
  // peerId -> {iceState, connectionState, candidateType, relayProtocol, remoteCandidateType, rtt}
  // (group rooms: the path of the subscribe connection, which brings everyone's media)
  links: {},
  screens: [], // group rooms: ids of participants whose screen share we receive (a tile of its own)
  speaker: null, // group rooms: the dominant speaker's id, as the SFU measures it
  sfuRestarts: 0, // group rooms: times the server lost our SFU session and we started it again
  speaking: [], // peer-to-peer rooms (and self everywhere): ids whose audio this page hears now
  reactions: [], // [{key, participantId, emoji}] shown over tiles for a few seconds
  reactionSeq: 0,
  pinned: null, // a tile key (participant id or `<id>:screen`) shown large; null: automatic
  moreMenu: false, // the overflow menu of the control bar is open
  inviteDismissed: false, // the "invite others" card was closed
  failure: null, // {code, message} when joining failed or the meeting ended for us
  // {headline, advice, connections} while some connection has had no media path for long (mediapath.js)
  mediaProblem: null,
  notice: null, // {text, kind: 'info' | 'warn'} — a transient toast
  audioBlocked: false, // autoplay refused to play remote audio until the user clicks
  panel: null, // null | 'chat' | 'people'
  deviceMenu: false, // the in-call camera / microphone menu is open
  confirmEnd: false, // "End for all" was clicked once; the next click ends the meeting
  embedded: false, // the page runs inside an iframe
};

/**
 * Non-plain companions of `state`: id -> MediaStream ('self' is the local preview; in group rooms
 * `<id>:screen` is a participant's screen share).
 */
export const streams = new Map();

const renderers = [];
let scheduled = false;

export function onRender(fn) {
  renderers.push(fn);
}

function flush() {
  scheduled = false;
  for (const fn of renderers) {
    try {
      fn(state);
    } catch (err) {
      console.error('render failed', err);
    }
  }
}

/** Change the state and render once, after the current task (many updates, one render). */
export function update(mutate) {
  if (mutate) mutate(state);
  if (!scheduled) {
    scheduled = true;
    // A microtask, not requestAnimationFrame: background tabs and iframes throttle rAF to nothing.
    queueMicrotask(flush);
  }
}

let noticeTimer = null;
export function notify(text, kind = 'info', ms = 5000) {
  clearTimeout(noticeTimer);
  update((s) => {
    s.notice = { text, kind };
  });
  noticeTimer = setTimeout(() => update((s) => { s.notice = null; }), ms);
}
