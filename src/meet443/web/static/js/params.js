// What the page's address says: the room, and the parameters an embedder or a test may pass.
//
//   displayName=Ann     prefill the name (and use it as-is with autojoin=1)
//   autojoin=1          skip the pre-join screen: join at once with camera and microphone
//   roomKey=K           a host key; read once, then removed from the address bar and history
//   relay=udp|tcp|tls   use only that TURN transport and nothing but relayed paths
//   videoCodec=vp8|h264 group rooms: the codec the camera and screen share are sent in (vp8)

export const ROOM_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
export const RESERVED_ROOM_NAMES = new Set([
  'check', 'healthz', 'v1', 'static', 'metrics', 'api', 'favicon.ico', 'robots.txt',
]);
export const RELAY_TRANSPORTS = ['udp', 'tcp', 'tls'];
/** What the SFU takes from a publisher (docs/signaling.md "Group rooms"); the first is the default. */
export const VIDEO_CODECS = ['vp8', 'h264'];

export function isValidRoomName(name) {
  return ROOM_NAME.test(name) && !RESERVED_ROOM_NAMES.has(name);
}

/** The room is the last path segment: https://host/<room>. */
export function roomNameFromPath(pathname) {
  const segment = pathname.split('/').filter(Boolean).pop() || '';
  try {
    return decodeURIComponent(segment).toLowerCase();
  } catch {
    return segment.toLowerCase();
  }
}

/** Turns free text ("Team Sync!") into a room name ("team-sync"), or '' if nothing is left. */
export function slugifyRoomName(text) {
  const slug = text
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 64)
    .replace(/-+$/, '');
  return slug;
}

export function cleanDisplayName(text) {
  // The server trims and strips control characters too; doing it here keeps the preview honest.
  return (text || '').replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 64);
}

/**
 * Reads the query once. A room key is secret: it is taken out of the address bar (and so out of
 * the history entry, bookmarks and screenshots) before anything else runs.
 */
export function readParams(loc = window.location, history = window.history) {
  const query = new URLSearchParams(loc.search);
  const relay = (query.get('relay') || '').toLowerCase();
  const autojoin = (query.get('autojoin') || '').toLowerCase();
  const videoCodec = (query.get('videoCodec') || '').toLowerCase();
  const params = {
    displayName: cleanDisplayName(query.get('displayName')),
    autojoin: autojoin === '1' || autojoin === 'true' || autojoin === 'yes',
    roomKey: query.get('roomKey') || null,
    relay: RELAY_TRANSPORTS.includes(relay) ? relay : null,
    videoCodec: VIDEO_CODECS.includes(videoCodec) ? videoCodec : VIDEO_CODECS[0],
  };
  if (query.has('roomKey')) {
    query.delete('roomKey');
    const rest = query.toString();
    history.replaceState(history.state, '', loc.pathname + (rest ? `?${rest}` : '') + loc.hash);
  }
  return params;
}

const WORDS_A = ['amber', 'brave', 'calm', 'clear', 'bright', 'quiet', 'swift', 'warm', 'bold', 'keen', 'lucky', 'sunny'];
const WORDS_B = ['river', 'harbor', 'meadow', 'summit', 'forest', 'canyon', 'island', 'comet', 'falcon', 'maple', 'orbit', 'tide'];
const ALPHABET = 'abcdefghijkmnpqrstuvwxyz23456789';

/** "calm-river-k7q2xm": easy to read out; about 37 random bits make it hard to guess. */
export function randomRoomName(random = (n) => crypto.getRandomValues(new Uint32Array(n))) {
  const r = random(8);
  const tail = Array.from(r.slice(2), (x) => ALPHABET[x % ALPHABET.length]).join('');
  return `${WORDS_A[r[0] % WORDS_A.length]}-${WORDS_B[r[1] % WORDS_B.length]}-${tail}`;
}

/** A pasted link (https://host/room?x) or a typed name → a room name, or '' if there is none. */
export function roomFromInput(text) {
  let value = text.trim();
  if (/^https?:\/\//i.test(value)) {
    try {
      value = new URL(value).pathname.split('/').filter(Boolean).pop() || '';
    } catch {
      return '';
    }
  }
  const slug = slugifyRoomName(value);
  return isValidRoomName(slug) ? slug : '';
}

/** The address to share: the room without any parameters. */
export function shareableUrl(loc = window.location) {
  return `${loc.origin}${loc.pathname}`;
}
