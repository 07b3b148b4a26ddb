// The meeting page: wires URL parameters, local media, signaling, the peer mesh (or, in group
// rooms, the SFU session), stats and the view together. Server messages and user actions change
// the one state object (state.js); the view renders it.

import { rtcConfiguration } from './ice.js';
import { GROUP_VIDEO_CONSTRAINTS, LocalMedia } from './media.js';
import { watchMediaPaths } from './mediapath.js';
import { cleanDisplayName, isValidRoomName, readParams, roomNameFromPath, shareableUrl } from './params.js';
import { Mesh } from './peers.js';
import { SfuSession } from './sfu.js';
import { SignalingClient, TERMINAL_ERRORS, signalingUrl } from './signaling.js';
import { notify, onRender, state, streams, update } from './state.js';
import { emptyInbound, summarize } from './stats.js';
import { RoomView } from './ui.js';

const STATS_INTERVAL_MS = 2_000;
/** While joining, give up (and say so, with a link to /check) after this many failed attempts. */
const JOIN_ATTEMPTS = 5;

const params = readParams();
const storage = safeStorage();

let signaling = null;
let mesh = null;
let sfu = null; // group rooms only: the two connections with the server's SFU
let statsTimer = null;
let serverPolicy = 'all';

const media = new LocalMedia({
  onTracks(tracks) {
    update((s) => {
      s.local.hasAudio = !!tracks.audio;
      s.local.hasVideo = !!tracks.video;
    });
    if (mesh) mesh.setTracks(tracks);
    if (sfu) sfu.setTracks(sfuTracks());
  },
  onDevices(devices, selected) {
    update((s) => {
      s.local.devices = devices;
      s.local.selected = selected;
    });
  },
  onScreenEnded() {
    update((s) => {
      s.local.screen = false;
    });
    sendMediaState();
  },
  onFallback(kind, err) {
    const what = kind === 'audioinput' ? 'microphone' : 'camera';
    if (err) mediaError(err);
    else notify(`Your ${what} was disconnected; now using the default ${what}.`, 'warn');
    sendMediaState();
  },
});
streams.set('self', media.stream);

// ------------------------------------------------------------------------------------------------
// Actions: what the person can do (the view calls these)

const actions = {
  setName(value) {
    update((s) => {
      s.displayName = value;
    });
  },

  async join(name) {
    const displayName = cleanDisplayName(name);
    if (!displayName) return;
    storage.set('meet443.displayName', displayName);
    update((s) => {
      s.displayName = displayName;
    });
    startCall();
  },

  async rejoin() {
    if (state.local.audio || state.local.video) await openMedia();
    startCall();
  },

  toggleMic() {
    const on = !state.local.audio;
    update((s) => {
      s.local.audio = on;
    });
    media.setAudioEnabled(on).then((err) => mediaError(err));
    sendMediaState();
  },

  async toggleCam() {
    const on = !state.local.video;
    update((s) => {
      s.local.video = on;
    });
    const err = await media.setVideoEnabled(on);
    if (err && on) {
      update((s) => {
        s.local.video = false;
      });
      mediaError(err);
    }
    sendMediaState();
  },

  async toggleScreen() {
    if (state.local.screen) {
      media.stopScreen();
      update((s) => {
        s.local.screen = false;
      });
    } else {
      try {
        await media.startScreen();
        update((s) => {
          s.local.screen = true;
        });
      } catch (err) {
        if (err && err.name !== 'NotAllowedError') notify('Screen sharing did not start.', 'warn');
      }
    }
    sendMediaState();
  },

  togglePanel(name) {
    actions.openPanel(state.panel === name ? null : name);
  },

  openPanel(name) {
    update((s) => {
      s.panel = name;
      if (name === 'chat') s.unread = 0;
    });
  },

  async selectDevice(kind, deviceId) {
    storage.set(`meet443.${kind}`, deviceId);
    const err = await media.selectDevice(kind, deviceId);
    mediaError(err);
    if (err) media.refreshDevices(); // the lists show the device still in use again
  },

  toggleDeviceMenu(open = !state.deviceMenu) {
    update((s) => {
      s.deviceMenu = open;
    });
    if (open) media.refreshDevices();
  },

  sendChat(text) {
    if (!signaling) return;
    const clientMessageId = signaling.sendChat(text.slice(0, 4000));
    update((s) => {
      s.chat.push({ clientMessageId, from: s.selfId, displayName: s.displayName, text, pending: true });
    });
  },

  lock(locked) {
    signaling?.send({ type: 'lock', locked });
  },

  admit(participantId) {
    signaling?.send({ type: 'admit', participantId });
    dropKnock(participantId);
  },

  reject(participantId) {
    signaling?.send({ type: 'reject', participantId });
    dropKnock(participantId);
  },

  kick(participantId) {
    signaling?.send({ type: 'kick', participantId });
  },

  muteParticipant(participantId, kind) {
    signaling?.send({ type: 'mute', participantId, kind });
  },

  endForAll() {
    // Two clicks, not confirm(): a modal dialog would freeze an embedding page as well.
    if (!state.confirmEnd) {
      update((s) => {
        s.confirmEnd = true;
      });
      setTimeout(() => update((s) => { s.confirmEnd = false; }), 4000);
      return;
    }
    signaling?.send({ type: 'end' });
  },

  leave() {
    signaling?.leave();
    finish('left');
  },

  async copyLink() {
    const url = shareableUrl();
    try {
      await navigator.clipboard.writeText(url);
      notify('Meeting link copied.');
    } catch {
      notify(url, 'info', 10000); // clipboard refused (e.g. in an iframe): show it to copy by hand
    }
  },

  audioBlocked(blocked) {
    update((s) => {
      s.audioBlocked = blocked;
    });
  },
};

// ------------------------------------------------------------------------------------------------
// Joining and leaving

function startCall() {
  if (signaling) signaling.stop();
  if (mesh) mesh.removeAll();
  closeSfu();
  update((s) => {
    s.phase = 'joining';
    s.failure = null;
    s.selfId = null;
    s.participants = {};
    s.order = [];
    s.knocks = [];
    s.links = {};
    s.screens = [];
    s.speaker = null;
    s.chat = [];
    s.unread = 0;
    s.signaling = 'connecting';
    s.reconnectAttempts = 0;
  });
  signaling = new SignalingClient({
    url: signalingUrl(),
    room: state.roomName,
    displayName: state.displayName || 'Guest',
    roomKey: params.roomKey,
    handlers: { message: onMessage, status: onStatus },
  });
  mesh = new Mesh({
    signaling,
    localStream: media.stream,
    onTrack(peerId, stream) {
      streams.set(peerId, stream);
      update();
    },
    onState(peerId, link) {
      update((s) => {
        s.links[peerId] = { ...(s.links[peerId] || {}), ...link };
      });
    },
    onRemove(peerId) {
      streams.delete(peerId);
      update((s) => {
        delete s.links[peerId];
      });
    },
  });
  mesh.setTracks({ audio: media.audioTrack, video: media.outgoingVideo });
  signaling.start();
  clearInterval(statsTimer);
  statsTimer = setInterval(refreshStats, STATS_INTERVAL_MS);
}

/** The meeting is over for us (left, kicked, ended, rejected, failed): release everything. */
function finish(phase, failure = null) {
  if (signaling) signaling.stop();
  if (mesh) mesh.removeAll();
  closeSfu();
  clearInterval(statsTimer);
  for (const id of [...streams.keys()]) if (id !== 'self') streams.delete(id);
  media.stopScreen();
  if (phase !== 'failed') {
    media.stopAll(); // the camera light goes off when the meeting is over
    update((s) => {
      s.local.hasAudio = s.local.hasVideo = false;
      s.local.screen = false;
    });
  }
  update((s) => {
    s.phase = phase;
    s.failure = failure;
    s.links = {};
    s.screens = [];
    s.speaker = null;
    s.knocks = [];
    s.signaling = 'closed';
    s.audioBlocked = false;
  });
}

function onStatus(status, detail) {
  update((s) => {
    s.signaling = status;
    s.reconnectAttempts = status === 'open' ? 0 : detail.attempts || 0;
  });
  if (status === 'closed' && state.phase !== 'in-call') {
    finish('failed', { code: 'connection', message: `closed (${detail.code})` });
  } else if (status === 'reconnecting' && state.phase === 'joining' && detail.attempts >= JOIN_ATTEMPTS) {
    finish('failed', { code: 'connection' });
  }
}

// ------------------------------------------------------------------------------------------------
// Server messages

function onMessage(m) {
  switch (m.type) {
    case 'joined':
      return onJoined(m);
    case 'knocking':
      return update((s) => {
        s.phase = 'knocking';
      });
    case 'knock':
      update((s) => {
        if (!s.knocks.some((k) => k.participantId === m.participantId)) {
          s.knocks.push({ participantId: m.participantId, displayName: m.displayName });
        }
      });
      return notify(`${m.displayName} is asking to join.`);
    case 'knock-cancelled':
      return dropKnock(m.participantId);
    case 'rejected':
      return finish('rejected');
    case 'participant-joined':
      upsertParticipant(m.participant);
      if (!isGroup()) mesh.add(m.participant.id, { polite: true }); // the newcomer offers
      return notify(`${m.participant.displayName} joined.`);
    case 'participant-updated':
      return upsertParticipant(m.participant);
    case 'participant-left':
      return onParticipantLeft(m);
    case 'offer':
    case 'answer':
    case 'candidate':
      return mesh.handle(m);
    case 'chat':
      return addChat(m);
    case 'room-updated': {
      const was = state.room.locked;
      update((s) => {
        s.room = { ...s.room, ...m.room };
      });
      if (was !== !!m.room.locked) notify(m.room.locked ? 'The meeting is locked.' : 'The meeting is unlocked.');
      return undefined;
    }
    case 'mute-request':
      return onMuteRequest(m);
    case 'kicked':
      return finish('kicked');
    case 'ended':
      return finish('ended');
    case 'ice-servers': {
      const config = rtcConfiguration(m.iceServers, serverPolicy, params.relay);
      mesh.setConfig(config);
      return sfu?.setConfiguration(config);
    }
    case 'publish-answer':
    case 'subscribe-offer':
    case 'tracks':
    case 'speaker':
    case 'republish':
      return sfu?.handle(m);
    case 'error':
      return onError(m);
    default:
      return undefined;
  }
}

function onJoined(m) {
  const fresh = !m.resumed;
  if (fresh) {
    // A new identity: every connection starts over.
    mesh.removeAll();
    closeSfu();
  }
  serverPolicy = m.iceTransportPolicy === 'relay' ? 'relay' : 'all';
  const config = rtcConfiguration(m.iceServers, serverPolicy, params.relay);
  mesh.setConfig(config);
  const present = new Set(m.participants.map((p) => p.id));
  update((s) => {
    s.phase = 'in-call';
    s.selfId = m.selfId;
    s.host = !!m.host;
    s.room = { ...s.room, ...m.room };
    if (fresh) {
      s.participants = {};
      s.order = [];
      s.knocks = [];
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
      connected: true,
      self: true,
    };
    if (!s.order.includes(m.selfId)) s.order.unshift(m.selfId);
  });
  for (const p of m.participants) upsertParticipant(p);
  if (isGroup()) {
    // Resumed: the server kept our SFU state, so the connections stay as they are.
    if (!sfu) startSfu(config);
    else sfu.setConfiguration(config);
    for (const c of m.chat || []) addChat(c);
    sendMediaState();
    return;
  }
  for (const p of m.participants) {
    // Fresh: everyone here came first, so we are impolite and offer. Resumed: anyone we did not
    // know joined while we were away — they came later and will offer.
    if (!mesh.has(p.id)) mesh.add(p.id, { polite: !fresh });
  }
  if (!fresh) {
    for (const id of [...mesh.links.keys()]) if (!present.has(id)) mesh.remove(id);
    mesh.restartBroken();
  }
  for (const c of m.chat || []) addChat(c);
  sendMediaState();
}

function upsertParticipant(p) {
  update((s) => {
    const self = p.id === s.selfId;
    const old = s.participants[p.id] || {};
    s.participants[p.id] = { ...old, ...p, self };
    if (self) {
      s.host = !!p.host;
      s.participants[p.id].displayName = p.displayName || s.displayName;
    }
    if (!s.order.includes(p.id)) s.order.push(p.id);
  });
}

function onParticipantLeft(m) {
  const p = state.participants[m.id];
  mesh.remove(m.id);
  update((s) => {
    delete s.participants[m.id];
    delete s.links[m.id]; // group rooms: the SFU hands this one's sections to others by itself
    s.order = s.order.filter((id) => id !== m.id);
  });
  if (p) {
    const why = { kicked: 'was removed', timeout: 'lost the connection' }[m.reason] || 'left';
    notify(`${p.displayName} ${why}.`);
  }
}

function addChat(m) {
  update((s) => {
    if (Number.isInteger(m.seq) && s.chat.some((c) => c.seq === m.seq)) return;
    const entry = {
      seq: m.seq,
      from: m.from,
      displayName: m.displayName,
      text: m.text,
      ts: m.ts,
      clientMessageId: m.clientMessageId || `seq-${m.seq}`,
      pending: false,
    };
    const mine = s.chat.findIndex((c) => c.pending && c.clientMessageId === m.clientMessageId);
    if (mine >= 0) s.chat.splice(mine, 1);
    // Confirmed messages in server order, our unconfirmed ones after them.
    const confirmed = s.chat.filter((c) => !c.pending);
    const pending = s.chat.filter((c) => c.pending);
    confirmed.push(entry);
    confirmed.sort((a, b) => a.seq - b.seq);
    s.chat = [...confirmed, ...pending];
    if (m.from !== s.selfId && s.panel !== 'chat') s.unread += 1;
  });
}

function onMuteRequest(m) {
  if (m.kind === 'audio' && state.local.audio) {
    actions.toggleMic();
    notify('A host muted your microphone.', 'warn');
  } else if (m.kind === 'video' && state.local.video) {
    actions.toggleCam();
    notify('A host turned off your camera.', 'warn');
  }
}

function onError(m) {
  if (sfu && m.ref) sfu.handleError(m);
  if (TERMINAL_ERRORS.has(m.code)) {
    finish('failed', { code: m.code, message: m.message });
  } else if (m.code === 'not-host') {
    notify('Only a host can do that.', 'warn');
  } else if (m.code === 'rate-limited') {
    notify('Slow down a little.', 'warn');
  } else {
    console.warn('signaling error', m);
  }
}

function dropKnock(participantId) {
  update((s) => {
    s.knocks = s.knocks.filter((k) => k.participantId !== participantId);
  });
}

function sendMediaState() {
  if (!signaling) return;
  const l = state.local;
  const msg = {
    type: 'media',
    audio: l.audio && l.hasAudio,
    // The mesh sends the screen instead of the camera; the SFU gets both.
    video: isGroup() ? l.video && !!media.cameraTrack : l.video && l.hasVideo && !l.screen,
    screen: l.screen,
  };
  update((s) => {
    const me = s.participants[s.selfId];
    if (me) Object.assign(me, { audio: msg.audio, video: msg.video, screen: msg.screen });
  });
  if (state.phase === 'in-call') signaling.send(msg);
}

function mediaError(err) {
  update((s) => {
    s.local.error = err || null;
  });
  if (err && state.phase === 'in-call') notify(errorText(err), 'warn', 8000);
}

function errorText(err) {
  if (err === 'denied') return 'Camera or microphone access is blocked for this site.';
  if (err === 'in-use') return 'The camera or microphone is in use by another app.';
  return 'No camera or microphone is available.';
}

// ------------------------------------------------------------------------------------------------
// Group rooms

function isGroup() {
  return state.room.mode === 'group';
}

function sfuTracks() {
  return { audio: media.audioTrack, camera: media.cameraTrack, screen: media.screenTrack };
}

document.addEventListener('visibilitychange', () => {
  if (sfu) sfu.setHidden(document.visibilityState === 'hidden');
});

function startSfu(config) {
  media.useVideoConstraints(GROUP_VIDEO_CONSTRAINTS);
  sfu = new SfuSession({
    send: (msg) => signaling.send(msg),
    config,
    tracks: sfuTracks(),
    videoCodec: params.videoCodec,
    onMedia(byTile) {
      for (const key of [...streams.keys()]) if (key !== 'self' && !byTile.has(key)) streams.delete(key);
      for (const [key, stream] of byTile) streams.set(key, stream);
      update((s) => {
        s.screens = [...byTile.keys()].filter((k) => k.endsWith(':screen')).map((k) => k.slice(0, -7));
      });
    },
    onSpeaker(participantId) {
      update((s) => {
        s.speaker = participantId;
      });
    },
    onState() {
      refreshStats();
    },
  });
}

function closeSfu() {
  if (!sfu) return;
  sfu.close();
  sfu = null;
  for (const key of [...streams.keys()]) if (key !== 'self') streams.delete(key);
  update((s) => {
    s.screens = [];
    s.speaker = null;
  });
}

/**
 * One connection entry per remote participant, as the mesh reports one per peer link: the path is
 * the subscribe connection's (everyone's media comes that way), the numbers that participant's.
 */
async function groupStats({ detail = false } = {}) {
  const { path, inbound, sfu: more } = await sfu.stats({ detail });
  const connections = state.order
    .filter((id) => id !== state.selfId && state.participants[id])
    .map((peerId) => ({
      peerId,
      iceState: path ? path.iceState : 'new',
      connectionState: path ? path.connectionState : 'new',
      candidateType: path ? path.candidateType : null,
      relayProtocol: path ? path.relayProtocol : null,
      remoteCandidateType: path ? path.remoteCandidateType : null,
      rtt: path ? path.rtt : null,
      ...(inbound.get(peerId) || emptyInbound()),
    }));
  return { connections, sfu: more };
}

// ------------------------------------------------------------------------------------------------
// Stats

async function refreshStats() {
  if (sfu) {
    const session = sfu;
    const { connections } = await groupStats().catch(() => ({ connections: [] }));
    update((s) => {
      if (sfu !== session) return;
      for (const c of connections) if (s.participants[c.peerId]) s.links[c.peerId] = c;
    });
    return;
  }
  if (!mesh) return;
  const results = await Promise.all(
    [...mesh.links].map(async ([peerId, link]) => [peerId, await summarize(link.pc).catch(() => null)]),
  );
  update((s) => {
    for (const [peerId, summary] of results) if (summary && mesh.has(peerId)) s.links[peerId] = summary;
  });
}

/**
 * For tests and embedders: the state, with connection details read from live getStats.
 * `{detail: true}` adds every ICE candidate pair of every connection.
 */
async function publicState({ detail = false } = {}) {
  let connections = [];
  let group = null;
  if (sfu) {
    ({ connections, sfu: group } = await groupStats({ detail }));
  } else if (mesh) {
    for (const [peerId, link] of mesh.links) {
      const summary = await summarize(link.pc, { detail });
      connections.push({
        peerId,
        ...summary,
        senders: link.pc.getSenders().map((sender) => trackInfo(sender.track)),
        polite: link.polite,
        iceRestarts: link.restarts,
        pathUpgrades: link.upgrades,
      });
    }
  }
  const s = state;
  return {
    roomName: s.roomName,
    mode: s.room.mode === 'group' ? 'group' : 'normal',
    selfId: s.selfId,
    phase: s.phase,
    signaling: s.signaling,
    host: s.host,
    room: { ...s.room },
    participants: s.order
      .filter((id) => s.participants[id])
      .map((id) => {
        const p = s.participants[id];
        return {
          id,
          displayName: p.displayName,
          self: !!p.self,
          host: !!p.host,
          connected: p.connected !== false,
          audio: !!p.audio,
          video: !!p.video,
          screen: !!p.screen,
        };
      }),
    connections,
    ...(group ? { sfu: group, speaker: s.speaker } : {}),
    knocks: s.knocks.map((k) => ({ ...k })),
    chat: s.chat.map((c) => ({
      seq: c.seq ?? null,
      from: c.from,
      displayName: c.displayName,
      text: c.text,
      pending: !!c.pending,
    })),
    local: {
      audio: s.local.audio,
      video: s.local.video,
      screen: s.local.screen,
      hasAudio: s.local.hasAudio,
      hasVideo: s.local.hasVideo,
      error: s.local.error,
      selected: { ...s.local.selected },
      devices: {
        audioinput: s.local.devices.audioinput.map((d) => ({ ...d })),
        videoinput: s.local.devices.videoinput.map((d) => ({ ...d })),
      },
      audioTrack: trackInfo(media.audioTrack),
      videoTrack: trackInfo(media.outgoingVideo),
    },
    failure: s.failure ? { ...s.failure } : null,
    mediaProblem: s.mediaProblem ? { ...s.mediaProblem } : null,
  };
}

/** A track as plain data (for tests): which device it comes from and whether it still runs. */
function trackInfo(track) {
  if (!track) return null;
  const settings = track.getSettings ? track.getSettings() : {};
  return {
    id: track.id,
    kind: track.kind,
    label: track.label,
    deviceId: settings.deviceId || '',
    enabled: track.enabled,
    readyState: track.readyState,
  };
}

// ------------------------------------------------------------------------------------------------
// Start

async function openMedia() {
  const err = await media.open({ audio: state.local.audio, video: state.local.video });
  mediaError(err);
}

function safeStorage() {
  // Storage throws in some embedded (third-party iframe) and private contexts; the page must not.
  const memory = new Map();
  return {
    get(key) {
      try {
        return window.localStorage.getItem(key);
      } catch {
        return memory.get(key) ?? null;
      }
    },
    set(key, value) {
      try {
        window.localStorage.setItem(key, value);
      } catch {
        memory.set(key, value);
      }
    },
  };
}

function isEmbedded() {
  try {
    return window.self !== window.top;
  } catch {
    return true;
  }
}

async function boot() {
  const view = new RoomView(actions);
  onRender((s) => view.render(s));
  const roomName = roomNameFromPath(window.location.pathname);
  update((s) => {
    s.roomName = roomName;
    s.embedded = isEmbedded();
    s.displayName = params.displayName || storage.get('meet443.displayName') || '';
  });
  if (!isValidRoomName(roomName)) {
    finish('failed', { code: 'bad-room-name' });
    return;
  }
  if (!window.RTCPeerConnection || !window.WebSocket) {
    finish('failed', { code: 'unsupported' });
    return;
  }
  for (const kind of ['audioinput', 'videoinput']) media.selected[kind] = storage.get(`meet443.${kind}`) || '';
  if (!params.autojoin) {
    update((s) => {
      s.phase = 'prejoin';
    });
  }
  await openMedia();
  if (params.autojoin) {
    if (!state.displayName) state.displayName = 'Guest';
    startCall();
  }
}

window.addEventListener('pagehide', () => {
  if (signaling && state.phase === 'in-call') signaling.leave();
});

window.meet443 = { state: publicState };
watchMediaPaths(() => ({ mesh, sfu }));
boot();
