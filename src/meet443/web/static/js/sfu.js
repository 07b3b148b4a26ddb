// Group rooms (docs/signaling.md "Group rooms"): instead of a mesh, two peer connections with the
// server's SFU. The publish connection carries our microphone, camera (three simulcast layers, so
// the SFU can give each receiver the one it has room for) and, while sharing, the screen. The
// subscribe connection is offered by the SFU: a bounded pool of sections that it hands from one
// participant to another by a `tracks` message, without renegotiating. Each participant's tile
// gets a MediaStream built from whichever sections carry that participant right now.
//
// Like the mesh, camera off, mute and device switches only swap sender tracks (replaceTrack);
// adding or removing the screen section, and ICE restarts, are a new `publish`, one at a time.

import { codecOf, inboundByParticipant, summarize } from './stats.js';

/**
 * Lowest first, as the SFU expects (docs/signaling.md); maxBitrate caps what each layer costs, as
 * far as the encoder can: at 320x180 VP8 overshoots its target about twice on busy pictures
 * (measured with Chromium's fake camera: 336 kbit/s for a 148 kbit/s target), so the lowest layer
 * also runs at 15 frames a second (as LiveKit's 180p preset does) to stay usable on a 300 kbit/s link.
 */
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000, maxFramerate: 15 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', maxBitrate: 1_500_000 },
];
/** H.264 as the SFU takes it and every browser decodes it: Constrained Baseline, then Baseline. */
const H264_PROFILES = ['42e0', '4200'];
/** What every WebRTC browser decodes (RFC 7742 §5): offered after the wanted codec. */
const FALLBACK_CODEC = 'vp8';
const DISCONNECTED_RESTART_MS = 5_000;
const PUBLISH_RESEND_MS = 8_000;
const PUBLISH_RESENDS = 4;

/**
 * mid -> {participantId, source, kind} after a `subscribe-offer` or `tracks` message. Merged, not
 * replaced: a message names the sections it is about; sections that left the SDP are pruned by
 * `keepMids` (the mids the subscribe connection still has).
 */
export function applyTracks(sections, tracks, keepMids = null) {
  const next = new Map(sections);
  for (const t of tracks || []) {
    if (!t || typeof t.mid !== 'string') continue;
    next.set(t.mid, { participantId: t.participantId ?? null, source: t.source ?? null, kind: t.kind });
  }
  if (keepMids) for (const mid of [...next.keys()]) if (!keepMids.has(mid)) next.delete(mid);
  return next;
}

/**
 * Which tracks each tile should show: key -> [mid, ...], where the key is the participant id
 * (microphone and camera) or `<id>:screen`. Several sections for one source (a stale mapping
 * during a hand-over) keep only the first, so a tile never plays two cameras.
 */
export function tileSections(sections) {
  const tiles = new Map();
  const taken = new Set();
  for (const [mid, s] of sections) {
    if (!s.participantId || !s.source) continue;
    const key = s.source === 'screen' ? `${s.participantId}:screen` : s.participantId;
    const slot = `${key}/${s.source}`;
    if (taken.has(slot)) continue;
    taken.add(slot);
    if (!tiles.has(key)) tiles.set(key, []);
    tiles.get(key).push(mid);
  }
  return tiles;
}

/** "a=1;b=x" (an RTCRtpCodec's sdpFmtpLine) -> {a: '1', b: 'x'}. */
function fmtpParameters(line) {
  const out = {};
  for (const part of (line || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0) out[part.slice(0, eq).trim().toLowerCase()] = part.slice(eq + 1).trim().toLowerCase();
  }
  return out;
}

/**
 * What RTCRtpTransceiver.setCodecPreferences should get from `codecs` (RTCRtpCodec capabilities)
 * so that the browser sends `name` ('vp8' | 'h264'): that codec, then VP8 as the fallback, then
 * rtx (retransmissions), and nothing else; null when the browser has no such codec. H.264 only in
 * the form the SFU takes (docs/signaling.md "Group rooms"): packetization-mode 1, Constrained
 * Baseline (42e01f) before Baseline (42001f).
 *
 * The SFU answers in this order unless someone in the room cannot decode the first codec: then it
 * puts VP8, which every WebRTC browser decodes, first (and asks for a new offer when that changes).
 */
export function preferredVideoCodecs(codecs, name) {
  const ranked = (wantedName) => {
    const mimeType = `video/${wantedName}`;
    const rank = (c) => {
      if ((c.mimeType || '').toLowerCase() !== mimeType) return -1;
      if (mimeType !== 'video/h264') return 0;
      const fmtp = fmtpParameters(c.sdpFmtpLine);
      if (fmtp['packetization-mode'] !== '1') return -1;
      return H264_PROFILES.indexOf((fmtp['profile-level-id'] || '').slice(0, 4));
    };
    return codecs.filter((c) => rank(c) >= 0).sort((a, b) => rank(a) - rank(b));
  };
  const wanted = ranked(name.toLowerCase());
  if (wanted.length === 0) return null;
  const fallback = name.toLowerCase() === FALLBACK_CODEC ? [] : ranked(FALLBACK_CODEC);
  return [...wanted, ...fallback, ...codecs.filter((c) => (c.mimeType || '').toLowerCase() === 'video/rtx')];
}

/**
 * Makes a sending video transceiver prefer `name` in the offers it takes part in. The spec checks
 * preferences against the receive capabilities, older Chromium against the send ones: try both.
 * Returns whether the preference took; without it the browser offers all it has, and the SFU picks
 * VP8.
 */
export function preferVideoCodec(transceiver, name) {
  if (!name || typeof transceiver.setCodecPreferences !== 'function') return false;
  for (const side of [globalThis.RTCRtpReceiver, globalThis.RTCRtpSender]) {
    const codecs = preferredVideoCodecs(side?.getCapabilities?.('video')?.codecs || [], name);
    if (!codecs) continue;
    try {
      transceiver.setCodecPreferences(codecs);
      return true;
    } catch (err) {
      console.warn(`setCodecPreferences(${name}) refused`, err);
    }
  }
  console.warn(`this browser cannot send ${name}: sending its default video codec`);
  return false;
}

export class SfuSession {
  /**
   * send(msg) to the server; config is the RTCConfiguration (ice.js); tracks {audio, camera,
   * screen}; onMedia(Map key -> MediaStream) whenever what a tile shows changed;
   * onState() when a connection's ICE state changed; videoCodec ('vp8' | 'h264', params.js) is
   * what the camera and the screen share are sent in. The first publish waits for `ready`: after an
   * `sfu-restart`, until the server has answered what the previous session sent (a barrier), so
   * that no answer meant for that one is taken for this one's.
   */
  constructor({ send, config, tracks, onMedia, onState, videoCodec = 'vp8', ready = Promise.resolve() }) {
    this.send = send;
    this.videoCodec = videoCodec;
    this.config = config;
    this.onMedia = onMedia;
    this.onState = onState;
    this.closed = false;
    this.tracks = { audio: null, camera: null, screen: null };
    this.sections = new Map();
    this.hidden = false;
    this.media = new Map(); // tile key -> MediaStream, kept so a <video> is not re-attached needlessly
    this.publishQueue = ready;
    this.subscribeQueue = Promise.resolve(); // offers and `tracks`, strictly in arrival order
    this.pendingAnswer = null; // {resolve, reject} of the publish in flight
    this.publishBroken = false; // the SFU refused our offer: do not loop on the same one
    this.resubscribing = false;
    this.timers = { resend: null, pub: null, sub: null };
    this.restarts = { publish: 0, subscribe: 0 };
    this.sub = null;

    this.pub = new RTCPeerConnection(this.config);
    // Created before any track may exist: a microphone or camera that comes later only fills the
    // sender (replaceTrack), it does not renegotiate.
    this.transceivers = {
      audio: this.pub.addTransceiver(tracks.audio || 'audio', { direction: 'sendonly' }),
      camera: this.pub.addTransceiver(tracks.camera || 'video', { direction: 'sendonly', sendEncodings: SIMULCAST }),
      screen: null,
    };
    preferVideoCodec(this.transceivers.camera, this.videoCodec);
    this.tracks.audio = tracks.audio || null;
    this.tracks.camera = tracks.camera || null;
    this.pub.onnegotiationneeded = () => this.publish();
    this.pub.oniceconnectionstatechange = () => this.watchIce(this.pub, 'pub', () => this.restartPublish());
    if (tracks.screen) this.setTracks(tracks);
  }

  // ----------------------------------------------------------------------------------------------
  // Publishing

  /** The offer/answer exchanges of the publish connection run one after another. */
  publish() {
    this.publishQueue = this.publishQueue.then(() => this.publishOnce()).catch((err) => {
      if (!this.closed) console.warn('publish failed', err);
    });
    return this.publishQueue;
  }

  async publishOnce() {
    const pc = this.pub;
    if (this.closed || this.publishBroken || pc.signalingState !== 'stable') return;
    await pc.setLocalDescription();
    const msg = { type: 'publish', sdp: pc.localDescription.sdp, sources: this.sources() };
    const answer = new Promise((resolve, reject) => {
      this.pendingAnswer = { resolve, reject };
    });
    this.sendPublish(msg, 0);
    let sdp;
    try {
      sdp = await answer;
    } catch (err) {
      if (!this.closed) await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    } finally {
      clearTimeout(this.timers.resend);
      this.pendingAnswer = null;
    }
    if (!this.closed) await pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /** An offer or its answer can be lost while the socket reconnects; the same offer is harmless. */
  sendPublish(msg, resends) {
    this.send(msg);
    this.timers.resend = setTimeout(() => {
      if (!this.closed && this.pendingAnswer && resends < PUBLISH_RESENDS) this.sendPublish(msg, resends + 1);
    }, PUBLISH_RESEND_MS);
  }

  /** mid -> source for every section that sends; mids exist only after setLocalDescription. */
  sources() {
    const out = {};
    const named = [
      [this.transceivers.audio, 'microphone'],
      [this.transceivers.camera, 'camera'],
      [this.transceivers.screen, 'screen'],
    ];
    for (const [t, source] of named) if (t && t.mid && !t.stopped) out[t.mid] = source;
    return out;
  }

  /** LocalMedia's onTracks: swap tracks in place; only starting or ending a share renegotiates. */
  setTracks({ audio, camera, screen }) {
    if (this.closed) return;
    this.tracks = { audio: audio || null, camera: camera || null, screen: screen || null };
    this.transceivers.audio.sender.replaceTrack(this.tracks.audio).catch((err) => console.warn(err));
    this.transceivers.camera.sender.replaceTrack(this.tracks.camera).catch((err) => console.warn(err));
    const t = this.transceivers.screen;
    if (screen && !t) {
      this.transceivers.screen = this.pub.addTransceiver(screen, { direction: 'sendonly' }); // → negotiationneeded
      preferVideoCodec(this.transceivers.screen, this.videoCodec); // before the offer: that is a task later
    } else if (screen && t) {
      t.sender.replaceTrack(screen).catch((err) => console.warn(err));
    } else if (!screen && t) {
      t.stop(); // → negotiationneeded; the section is rejected (port 0) in the next publish
      this.transceivers.screen = null;
    }
  }

  restartPublish() {
    if (this.closed) return;
    this.restarts.publish += 1;
    this.pub.restartIce(); // → negotiationneeded → a publish with new ICE credentials
  }

  // ----------------------------------------------------------------------------------------------
  // Subscribing

  async answerSubscribe(m) {
    if (this.closed) return;
    if (!this.sub) this.sub = this.makeSubscriber();
    const pc = this.sub;
    await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    await pc.setLocalDescription();
    this.send({ type: 'subscribe-answer', sdp: pc.localDescription.sdp });
    this.resubscribing = false;
    const mids = new Set(pc.getTransceivers().filter((t) => t.mid && !t.stopped).map((t) => t.mid));
    this.sections = applyTracks(this.sections, m.tracks, mids);
    this.syncMedia();
    if (this.hidden) this.pauseVideos(); // new sections, or sections given to someone else
  }

  makeSubscriber() {
    const pc = new RTCPeerConnection(this.config);
    pc.ontrack = () => this.syncMedia();
    pc.oniceconnectionstatechange = () => this.watchIce(pc, 'sub', () => this.resubscribe());
    return pc;
  }

  /** A failed subscribe connection is the SFU's to restart: it answers with a fresh offer. */
  resubscribe() {
    if (this.closed || this.resubscribing) return;
    this.resubscribing = true;
    this.restarts.subscribe += 1;
    this.send({ type: 'resubscribe' });
  }

  /**
   * The page is hidden (another tab, minimised): nobody sees the videos, so the SFU need not send
   * them (docs/signaling.md `pause`); audio keeps flowing. Visible again: they resume with a keyframe.
   */
  setHidden(hidden) {
    if (this.hidden === hidden) return;
    this.hidden = hidden;
    this.pauseVideos();
  }

  pauseVideos() {
    for (const [mid, s] of this.sections) if (s.kind === 'video') this.pause(mid, this.hidden);
  }

  /** Stop (or resume) the video of a section no tile shows. */
  pause(mid, paused) {
    if (!this.closed) this.send({ type: 'pause', mid, paused: !!paused });
  }

  /** Move every receiver track to the stream of the tile that shows it now. */
  syncMedia() {
    if (this.closed) return;
    const byMid = new Map();
    for (const t of this.sub ? this.sub.getTransceivers() : []) if (t.mid) byMid.set(t.mid, t.receiver.track);
    const wanted = new Map();
    for (const [key, mids] of tileSections(this.sections)) {
      wanted.set(key, mids.map((mid) => byMid.get(mid)).filter(Boolean));
    }
    let changed = false;
    for (const [key, stream] of this.media) {
      if (!wanted.has(key)) {
        this.media.delete(key);
        changed = true;
      } else {
        for (const track of stream.getTracks()) {
          if (!wanted.get(key).includes(track)) {
            stream.removeTrack(track);
            changed = true;
          }
        }
      }
    }
    for (const [key, tracks] of wanted) {
      let stream = this.media.get(key);
      if (!stream) {
        stream = new MediaStream();
        this.media.set(key, stream);
        changed = true;
      }
      for (const track of tracks) {
        if (!stream.getTracks().includes(track)) {
          stream.addTrack(track);
          changed = true;
        }
      }
    }
    if (changed) this.onMedia(new Map(this.media));
  }

  // ----------------------------------------------------------------------------------------------
  // Both connections

  /** Messages of the group-room protocol; anything else is not ours. */
  handle(m) {
    if (this.closed) return;
    switch (m.type) {
      case 'publish-answer':
        if (this.pendingAnswer) this.pendingAnswer.resolve(m.sdp);
        break;
      case 'subscribe-offer':
        this.subscribed(() => this.answerSubscribe(m));
        break;
      case 'tracks':
        this.subscribed(() => {
          this.sections = applyTracks(this.sections, m.tracks);
          this.syncMedia();
          if (this.hidden) this.pauseVideos(); // the SFU resumes a section it gives to someone else
        });
        break;
      case 'republish':
        // Someone in the room cannot decode what we send: the SFU answers a new offer with a
        // codec everyone decodes (and, once they left, with ours again).
        this.publish();
        break;
      default:
        break;
    }
  }

  /** A `tracks` message refers to the sections of the offers before it: keep their order. */
  subscribed(step) {
    this.subscribeQueue = this.subscribeQueue.then(step).catch((err) => {
      if (!this.closed) console.warn('subscribe connection:', err);
    });
  }

  /** An `error` about one of our requests; `bad-description` on a publish would recur as is. */
  handleError(m) {
    if (m.ref === 'publish' && this.pendingAnswer) {
      this.publishBroken = m.code === 'bad-description';
      this.pendingAnswer.reject(new Error(`${m.code}: ${m.message}`));
    }
  }

  watchIce(pc, name, restart) {
    clearTimeout(this.timers[name]);
    const state = pc.iceConnectionState;
    if (state === 'failed') {
      restart();
    } else if (state === 'disconnected') {
      this.timers[name] = setTimeout(() => {
        if (pc.iceConnectionState === 'disconnected') restart();
      }, DISCONNECTED_RESTART_MS);
    }
    this.onState();
  }

  setConfiguration(config) {
    this.config = config;
    for (const pc of [this.pub, this.sub]) {
      try {
        if (pc) pc.setConfiguration(this.config);
      } catch (err) {
        console.warn('setConfiguration refused', err);
      }
    }
  }

  /**
   * Live statistics: the subscribe connection's path (as the mesh reports a link's), each remote
   * participant's inbound streams, and what the publish connection sends per simulcast layer.
   */
  async stats({ detail = false } = {}) {
    const path = this.sub ? await summarize(this.sub, { detail }) : null;
    const publishPath = await summarize(this.pub, { detail });
    const report = this.sub ? await this.sub.getStats() : new Map();
    const trackMids = new Map();
    for (const t of this.sub ? this.sub.getTransceivers() : []) if (t.mid) trackMids.set(t.receiver.track.id, t.mid);
    const pubReport = await this.pub.getStats();
    const layers = [];
    let publishBytesSent = 0;
    pubReport.forEach((r) => {
      if (r.type !== 'outbound-rtp') return;
      publishBytesSent += r.bytesSent || 0;
      if (r.kind === 'video') {
        layers.push({
          mid: r.mid ?? null,
          rid: r.rid ?? null,
          active: r.active !== false,
          bytesSent: r.bytesSent || 0,
          framesSent: r.framesSent || 0,
          frameWidth: r.frameWidth || 0,
          codec: codecOf(r, pubReport),
          qualityLimitationReason: r.qualityLimitationReason || null,
        });
      }
    });
    return {
      path,
      inbound: inboundByParticipant(report, this.sections, trackMids),
      sfu: {
        publishIceState: this.pub.iceConnectionState,
        publishCandidateType: publishPath.candidateType,
        publishRelayProtocol: publishPath.relayProtocol,
        subscribeIceState: this.sub ? this.sub.iceConnectionState : 'new',
        publishBytesSent,
        publishRestarts: this.restarts.publish,
        resubscribes: this.restarts.subscribe,
        sources: this.sources(),
        sections: [...this.sections].map(([mid, s]) => ({ mid, ...s })),
        layers,
        ...(detail ? { publishPairs: publishPath.candidatePairs, subscribePairs: path?.candidatePairs ?? [] } : {}),
      },
    };
  }

  close() {
    this.closed = true;
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    if (this.pendingAnswer) this.pendingAnswer.reject(new Error('closed'));
    for (const pc of [this.pub, this.sub]) {
      if (!pc) continue;
      pc.onnegotiationneeded = pc.ontrack = pc.oniceconnectionstatechange = null;
      pc.close();
    }
    this.media.clear();
  }
}
