// Peer connections for the mesh: one RTCPeerConnection per remote participant, negotiated with
// "perfect negotiation" (docs/signaling.md): the later joiner is impolite and offers first; the
// earlier one is polite and rolls back its own offer on glare. Candidates trickle. When ICE fails
// (or stays disconnected), the impolite side restarts it with a fresh offer.
//
// Path upgrade: Chrome keeps the first TURN allocation that becomes ready and prunes the others.
// When a TCP or TLS allocation wins that race although UDP would work (a busy server answers the
// UDP Allocate a little later), media would ride a TCP stream, with its head-of-line blocking, for
// the whole call. So once per connection, a few seconds after connecting, a side whose own end
// relays over TCP/TLS while TURN over UDP is configured gathers again (an ICE restart, which keeps
// the current path until a new one works): a network that blocks UDP gives the same path back,
// one that does not moves to UDP.
//
// Sending: one audio and one video transceiver per connection, made by the impolite side and
// taken over by the polite side when the first offer arrives. Camera off, camera switch and
// screen sharing only swap the sender's track (replaceTrack), so none of them renegotiates.

import { turnTransport } from './ice.js';
import { summarize } from './stats.js';

const DISCONNECTED_RESTART_MS = 5_000;
const UPGRADE_CHECK_MS = 3_000;
const OFFER_RESEND_MS = 8_000;
const OFFER_RESENDS = 4;

export class PeerLink {
  constructor({ peerId, polite, config, send, tracks, localStream, onTrack, onState }) {
    this.peerId = peerId;
    this.polite = polite;
    this.send = send; // (msg) => void, `to` is added here
    this.localStream = localStream;
    this.onTrack = onTrack;
    this.onState = onState;
    this.remoteStream = new MediaStream();
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.tookOverTransceivers = false;
    this.queue = Promise.resolve(); // remote descriptions and candidates, one at a time, in order
    this.timers = { disconnected: null, resend: null, upgrade: null };
    this.resends = 0;
    this.restarts = 0; // ICE restarts this side began after a failure
    this.upgrades = 0; // ICE restarts this side began to move off a TCP/TLS relay
    this.upgradeScheduled = false;
    this.closed = false;
    this.tracks = { ...tracks };
    this.config = config;

    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    pc.onicecandidate = ({ candidate }) => {
      this.send({ type: 'candidate', candidate: candidate ? candidate.toJSON() : null });
    };
    pc.onnegotiationneeded = () => this.negotiate();
    pc.ontrack = ({ track }) => {
      for (const old of this.remoteStream.getTracks()) {
        if (old.kind === track.kind && old !== track) this.remoteStream.removeTrack(old);
      }
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      this.onTrack(this.remoteStream);
    };
    pc.oniceconnectionstatechange = () => this.iceStateChanged();
    pc.onconnectionstatechange = () => this.report();
    pc.onsignalingstatechange = () => {
      if (pc.signalingState === 'stable') clearTimeout(this.timers.resend);
    };

    if (!polite) {
      // The impolite side makes the transceivers; adding them fires negotiationneeded → offer.
      this.addTransceivers();
    }
  }

  addTransceivers() {
    const streams = [this.localStream];
    this.audio = this.pc.addTransceiver(this.tracks.audio || 'audio', { direction: 'sendrecv', streams });
    this.video = this.pc.addTransceiver(this.tracks.video || 'video', { direction: 'sendrecv', streams });
    this.tookOverTransceivers = true;
  }

  /** Polite side, first offer: send our tracks on the transceivers the offer created. */
  async takeOverTransceivers() {
    if (this.tookOverTransceivers) return;
    this.tookOverTransceivers = true;
    for (const t of this.pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      if (kind === 'audio' && !this.audio) this.audio = t;
      else if (kind === 'video' && !this.video) this.video = t;
      else continue;
      t.direction = 'sendrecv';
      t.sender.setStreams(this.localStream);
      await t.sender.replaceTrack(this.tracks[kind] || null);
    }
  }

  async negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.sendOffer();
    } catch (err) {
      console.warn(`negotiation with ${this.peerId} failed`, err);
    } finally {
      this.makingOffer = false;
    }
  }

  sendOffer() {
    const desc = this.pc.localDescription;
    if (!desc || desc.type !== 'offer') return;
    this.send({ type: 'offer', sdp: desc.sdp });
    // An offer or its answer can be lost while a socket is reconnecting; offers are idempotent,
    // so send the same one again until the answer comes.
    clearTimeout(this.timers.resend);
    this.timers.resend = setTimeout(() => {
      if (this.closed || this.pc.signalingState !== 'have-local-offer') return;
      if (this.resends++ < OFFER_RESENDS) this.sendOffer();
    }, OFFER_RESEND_MS);
  }

  /** offer / answer / candidate from the peer; handled strictly in arrival order. */
  handle(msg) {
    this.queue = this.queue.then(() => this.process(msg)).catch((err) => {
      console.warn(`signaling from ${this.peerId}: ${msg.type} failed`, err);
    });
    return this.queue;
  }

  async process(msg) {
    if (this.closed) return;
    const pc = this.pc;
    if (msg.type === 'offer' || msg.type === 'answer') {
      const description = { type: msg.type, sdp: msg.sdp };
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') return; // stale
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description); // rolls back our own offer on glare (polite)
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        await this.takeOverTransceivers();
        await pc.setLocalDescription();
        this.send({ type: 'answer', sdp: pc.localDescription.sdp });
      } else {
        this.resends = 0;
      }
    } else if (msg.type === 'candidate') {
      if (!msg.candidate || !msg.candidate.candidate) return; // end of candidates: nothing to do
      try {
        await pc.addIceCandidate(msg.candidate);
      } catch (err) {
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  iceStateChanged() {
    const state = this.pc.iceConnectionState;
    clearTimeout(this.timers.disconnected);
    if (state === 'failed') {
      this.restartIce();
    } else if (state === 'disconnected') {
      this.timers.disconnected = setTimeout(() => {
        if (this.pc.iceConnectionState === 'disconnected') this.restartIce();
      }, DISCONNECTED_RESTART_MS);
    } else if ((state === 'connected' || state === 'completed') && !this.upgradeScheduled) {
      this.upgradeScheduled = true;
      this.timers.upgrade = setTimeout(() => this.upgradeStreamRelay(), UPGRADE_CHECK_MS);
    }
    this.report();
  }

  get udpTurnConfigured() {
    return (this.config.iceServers || []).some((s) =>
      (Array.isArray(s.urls) ? s.urls : [s.urls]).some((u) => turnTransport(u) === 'udp'),
    );
  }

  /** Once per connection: our end relays over TCP/TLS although TURN over UDP is configured. */
  async upgradeStreamRelay() {
    if (this.closed || !this.udpTurnConfigured) return;
    const path = await summarize(this.pc).catch(() => null);
    if (this.closed || !path || path.candidateType !== 'relay') return;
    if (path.relayProtocol === 'tcp' || path.relayProtocol === 'tls') {
      this.upgrades += 1;
      this.pc.restartIce(); // either side: perfect negotiation sorts out a collision
    }
  }

  /** Only the impolite side restarts, so the two sides never race with two restart offers. */
  restartIce() {
    if (this.closed || this.polite) return;
    this.restarts += 1;
    this.pc.restartIce();
  }

  setConfiguration(config) {
    this.config = config;
    try {
      this.pc.setConfiguration(config);
    } catch (err) {
      console.warn('setConfiguration refused', err);
    }
  }

  /**
   * Our relays died with the room's old home (docs/cluster.md "Failover"): restart ICE through
   * the new ones, and send a key frame as soon as media flows on the new path. The peer's decoder
   * lost frames while the path was dead, and Chrome asks for a key frame (PLI) only ~3 s after
   * its last decoded frame, often into the dead path, so the sender does not wait to be asked.
   * Measured in the lab: video back later than 6 s after the kill in 9 of 12 trials without it,
   * 5 of 20 with it (BENCHMARKS.md "Failover", which also shows what the slow ones wait for).
   */
  pathMoved() {
    this.restartIce();
    const ice = this.video?.sender.transport?.iceTransport;
    if (!ice || !('onselectedcandidatepairchange' in ice)) return; // Firefox: no RTCIceTransport events
    const changed = () => {
      ice.removeEventListener('selectedcandidatepairchange', changed);
      this.sendKeyFrame().catch((err) => console.warn('key frame not sent', err));
    };
    ice.addEventListener('selectedcandidatepairchange', changed);
  }

  /** A video encoding switched off and on again starts with a key frame (libvpx, OpenH264). */
  async sendKeyFrame() {
    const sender = this.video?.sender;
    if (this.closed || !sender || !sender.track) return;
    for (const active of [false, true]) {
      const params = sender.getParameters();
      if (!params.encodings?.length) return;
      for (const encoding of params.encodings) encoding.active = active;
      await sender.setParameters(params);
    }
  }

  async replaceTrack(kind, track) {
    this.tracks[kind] = track;
    const transceiver = kind === 'audio' ? this.audio : this.video;
    if (transceiver && !this.closed) await transceiver.sender.replaceTrack(track || null);
  }

  report() {
    if (this.closed) return;
    this.onState({
      iceState: this.pc.iceConnectionState,
      connectionState: this.pc.connectionState,
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timers.disconnected);
    clearTimeout(this.timers.resend);
    clearTimeout(this.timers.upgrade);
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onnegotiationneeded = null;
    this.pc.oniceconnectionstatechange = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}

/** All links of this participant, keyed by peer id. */
/** The TURN URIs of an RTCConfiguration, as one comparable string. */
export function turnUrls(config) {
  return (config.iceServers || [])
    .flatMap((s) => (Array.isArray(s.urls) ? s.urls : [s.urls]))
    .sort()
    .join(' ');
}

export class Mesh {
  constructor({ signaling, localStream, onTrack, onState, onRemove }) {
    this.signaling = signaling;
    this.localStream = localStream;
    this.onTrack = onTrack; // (peerId, MediaStream)
    this.onState = onState; // (peerId, {iceState, connectionState})
    this.onRemove = onRemove; // (peerId)
    this.links = new Map();
    this.config = { iceServers: [] };
    this.tracks = { audio: null, video: null };
  }

  setConfig(config) {
    // Other TURN URIs than before (a credential refresh keeps them): our room moved to another
    // node because its home died (docs/cluster.md "Failover"), and relayed paths through the old
    // node's TURN are gone. Restart ICE now rather than wait for consent checks to fail.
    const moved = this.links.size > 0 && turnUrls(config) !== turnUrls(this.config);
    this.config = config;
    for (const link of this.links.values()) {
      link.setConfiguration(config);
      if (moved) link.pathMoved();
    }
  }

  add(peerId, { polite }) {
    if (this.links.has(peerId)) return this.links.get(peerId);
    const link = new PeerLink({
      peerId,
      polite,
      config: this.config,
      tracks: this.tracks,
      localStream: this.localStream,
      send: (msg) => this.signaling.send({ ...msg, to: peerId }),
      onTrack: (stream) => this.onTrack(peerId, stream),
      onState: (s) => this.onState(peerId, s),
    });
    this.links.set(peerId, link);
    return link;
  }

  get(peerId) {
    return this.links.get(peerId);
  }

  has(peerId) {
    return this.links.has(peerId);
  }

  remove(peerId) {
    const link = this.links.get(peerId);
    if (!link) return;
    link.close();
    this.links.delete(peerId);
    this.onRemove(peerId);
  }

  removeAll() {
    for (const id of [...this.links.keys()]) this.remove(id);
  }

  /** An offer, answer or candidate from `msg.from`. An offer from a stranger opens a link. */
  handle(msg) {
    let link = this.links.get(msg.from);
    if (!link) {
      if (msg.type !== 'offer') return;
      // Someone who joined while our socket was away offered first: they are the impolite one.
      link = this.add(msg.from, { polite: true });
    }
    link.handle(msg);
  }

  setTracks(tracks) {
    this.tracks = { ...tracks };
    for (const link of this.links.values()) {
      link.replaceTrack('audio', tracks.audio);
      link.replaceTrack('video', tracks.video);
    }
  }

  /** After the signaling socket came back: connections that broke meanwhile try again. */
  restartBroken() {
    for (const link of this.links.values()) {
      const s = link.pc.iceConnectionState;
      if (s === 'failed' || s === 'disconnected') link.restartIce();
    }
  }
}
