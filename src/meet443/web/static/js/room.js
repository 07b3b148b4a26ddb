// The meeting page: wires URL parameters, local media, signaling, the peer mesh (or, in group
// rooms, the SFU session), stats and the view together. Server messages and user actions change
// the one state object (state.js); the view renders it.

import { withChatMessage } from './chat.js';
import { rtcConfiguration } from './ice.js';
import { GROUP_VIDEO_CONSTRAINTS, LocalMedia } from './media.js';
import { watchMediaPaths } from './mediapath.js';
import { cleanDisplayName, isValidRoomName, readParams, roomNameFromPath, shareableUrl } from './params.js';
import { Mesh } from './peers.js';
import { SfuSession } from './sfu.js';
import { SignalingClient, TERMINAL_ERRORS, signalingUrl } from './signaling.js';
import { AudioLevels, SpeakingDetector } from './levels.js';
import { JOIN_WAIT_MS, RegionProbe } from './regions.js';
import { REACTIONS, dropKnock, expireReaction, receive } from './reducer.js';
import { snapshot, trackInfo } from './snapshot.js';
import { notify, onRender, state, streams, update } from './state.js';
import { emptyInbound, summarize } from './stats.js';
import { RoomView } from './ui.js';

const STATS_INTERVAL_MS = 2_000;
/** Level meter and speaking indicator refresh: fast enough to follow syllables, cheap enough. */
const LEVELS_INTERVAL_MS = 100;
/** The level meter's fall per interval (to a tenth in about a second). */
const METER_DECAY = 0.8;
/** While joining, give up (and say so, with a link to /check) after this many failed attempts. */
const JOIN_ATTEMPTS = 5;

const params = readParams();
const storage = safeStorage();

let signaling = null;
let mesh = null;
let sfu = null; // group rooms only: the two connections with the server's SFU
let statsTimer = null;
let iceConfig = null; // the RTCConfiguration from the last joined / ice-servers
// Round trips to each region's node, measured from page load on (the closest TURN relay).
const regionProbe = new RegionProbe();
let sentRtts = null; // what the last join carried
let sentUnreachable = null;
let regionWaitMs = null; // how long the last join waited for the probe once its socket was open
let view = null;
let selfLevel = 0;
const levels = new AudioLevels();
const detector = new SpeakingDetector();

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
    // What the button shows: after a refused or missing microphone, the first click tries again.
    const on = !(state.local.audio && state.local.hasAudio);
    update((s) => {
      s.local.audio = on;
    });
    media.setAudioEnabled(on).then((err) => mediaError(err));
    sendMediaState();
  },

  async toggleCam() {
    const on = !(state.local.video && state.local.hasVideo);
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

  raiseHand(raised = !state.local.hand) {
    update((s) => {
      s.local.hand = raised;
      const me = s.participants[s.selfId];
      if (me) me.hand = raised;
    });
    if (state.phase === 'in-call') signaling?.send({ type: 'hand', raised });
  },

  react(emoji) {
    if (REACTIONS.includes(emoji)) signaling?.send({ type: 'reaction', emoji });
    actions.toggleMoreMenu(false);
  },

  /** Show one tile large (a second click on the same one goes back to the automatic layout). */
  pin(key) {
    update((s) => {
      s.pinned = s.pinned === key ? null : key;
    });
  },

  toggleMoreMenu(open = !state.moreMenu) {
    update((s) => {
      s.moreMenu = open;
      if (open) s.deviceMenu = false;
    });
  },

  dismissInvite() {
    update((s) => {
      s.inviteDismissed = true;
    });
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
      if (open) s.moreMenu = false;
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
    update((s) => dropKnock(s, participantId));
  },

  reject(participantId) {
    signaling?.send({ type: 'reject', participantId });
    update((s) => dropKnock(s, participantId));
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

  /** Phones: the system share sheet (messages, mail, …) with the meeting link. */
  async shareLink() {
    try {
      await navigator.share({ title: `Meeting ${state.roomName}`, url: shareableUrl() });
    } catch (err) {
      if (err && err.name !== 'AbortError') actions.copyLink();
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
    s.speaking = [];
    s.reactions = [];
    s.pinned = null;
    s.inviteDismissed = false;
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
    joinFields() {
      const rtts = regionProbe.rtts();
      const unreachable = regionProbe.unreachable();
      sentRtts = rtts;
      sentUnreachable = unreachable;
      return {
        ...(Object.keys(rtts).length ? { rtts } : {}),
        ...(unreachable.length ? { unreachable } : {}),
      };
    },
    // Regions still unmeasured get JOIN_WAIT_MS more (while the socket is already open); an
    // unreachable one is left out.
    beforeJoin() {
      const waitFrom = performance.now();
      return regionProbe.settled(JOIN_WAIT_MS).then(() => {
        regionWaitMs = Math.round(performance.now() - waitFrom);
      });
    },
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
  // The camera light goes off whenever the call screen does, a failure (room full) included;
  // Rejoin opens the devices again.
  media.stopAll();
  update((s) => {
    s.local.hasAudio = s.local.hasVideo = false;
    s.local.screen = false;
  });
  update((s) => {
    s.phase = phase;
    s.failure = failure;
    s.links = {};
    s.screens = [];
    s.speaker = null;
    s.speaking = [];
    s.reactions = [];
    s.pinned = null;
    s.moreMenu = false;
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
// Server messages: the reducer changes the state; here its effects are carried out.

function onMessage(m) {
  // User Timing: how long a join took from navigation (BENCHMARKS.md "Join time with distance").
  if (m.type === 'joined' && !performance.getEntriesByName('meet443:joined').length) performance.mark('meet443:joined');
  let effects = [];
  update((s) => {
    effects = receive(s, m);
  });
  for (const effect of effects) run(effect);
}

function run(fx) {
  switch (fx.type) {
    case 'notify':
      return notify(fx.text, fx.kind);
    case 'finish':
      return finish(fx.phase);
    case 'connections':
      mesh.removeAll();
      return closeSfu();
    case 'config': {
      const config = rtcConfiguration(fx.iceServers, fx.policy, params.relay);
      iceConfig = config;
      mesh.setConfig(config);
      return sfu?.setConfiguration(config);
    }
    case 'mesh-add':
      return mesh.has(fx.id) ? undefined : mesh.add(fx.id, { polite: fx.polite });
    case 'mesh-remove':
      return mesh.remove(fx.id);
    case 'mesh-handle':
      return mesh.handle(fx.message);
    case 'mesh-prune': {
      const present = new Set(fx.present);
      for (const id of [...mesh.links.keys()]) if (!present.has(id)) mesh.remove(id);
      return mesh.restartBroken();
    }
    case 'sfu-start':
      return sfu ? undefined : startSfu(iceConfig);
    case 'sfu':
      return sfu?.handle(fx.message);
    case 'sfu-restart':
      // New peer connections, so new ICE credentials and a new DTLS handshake with the new SFU.
      closeSfu();
      return startSfu(iceConfig, signaling.barrier());
    case 'send-media':
      return sendMediaState();
    case 'mute-self':
      return fx.kind === 'audio' ? actions.toggleMic() : actions.toggleCam();
    case 'expire-reaction':
      return setTimeout(() => update((s) => expireReaction(s, fx.key)), fx.ms);
    case 'error':
      return onError(fx.message);
    default:
      return undefined;
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
// Audio levels: the meter on one's own tile and the pre-join preview; who is speaking, measured
// here for oneself and (in peer-to-peer rooms, where no server measures it) for everyone.

function measureLevels() {
  const keys = new Set();
  if (['prejoin', 'in-call'].includes(state.phase)) {
    levels.watch('self', media.stream);
    keys.add('self');
  }
  if (state.phase === 'in-call' && !isGroup()) {
    for (const [key, stream] of streams) {
      if (key === 'self') continue;
      levels.watch(key, stream);
      keys.add(key);
    }
  }
  levels.retain(keys);
  const measured = levels.levels();
  // The meter rises at once and falls back gently, as a VU meter does: short sounds stay visible.
  const current = state.local.audio ? measured.get('self') || 0 : 0;
  selfLevel = Math.max(current, selfLevel * METER_DECAY);
  if (view) view.renderLevel(selfLevel);
  const byParticipant = new Map();
  for (const [key, level] of measured) byParticipant.set(key === 'self' ? state.selfId || 'self' : key, level);
  if (!state.local.audio) byParticipant.delete(state.selfId || 'self');
  const speaking = detector.update(byParticipant, performance.now());
  if (speaking.join() !== state.speaking.join()) {
    update((s) => {
      s.speaking = speaking;
    });
  }
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

function startSfu(config, ready = undefined) {
  media.useVideoConstraints(GROUP_VIDEO_CONSTRAINTS);
  sfu = new SfuSession({
    ready,
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
  return snapshot(state, {
    connections,
    group,
    level: selfLevel,
    audioTrack: trackInfo(media.audioTrack),
    videoTrack: trackInfo(media.outgoingVideo),
    regions: {
      measured: regionProbe.rtts(),
      sent: sentRtts,
      sentUnreachable,
      waitedMs: regionWaitMs,
      iceUrls: (iceConfig?.iceServers || []).flatMap((server) => [].concat(server.urls)),
    },
  });
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
  regionProbe.start('/v1/regions');
  view = new RoomView(actions);
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
  for (const kind of ['audioinput', 'videoinput', 'audiooutput']) media.selected[kind] = storage.get(`meet443.${kind}`) || '';
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

setInterval(measureLevels, LEVELS_INTERVAL_MS);
// Browsers start an AudioContext made without a click suspended; any click or key resumes it.
for (const type of ['pointerdown', 'keydown']) document.addEventListener(type, () => levels.resume(), { passive: true });
window.meet443 = { state: publicState };
watchMediaPaths(() => ({ mesh, sfu }));
boot();
