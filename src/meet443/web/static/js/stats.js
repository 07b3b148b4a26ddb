// getStats() → what the connection badge shows and what window.meet443.state() reports.

/** The selected candidate pair: the transport's pointer, else the nominated succeeded pair. */
function selectedPair(report) {
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId) || pair;
  });
  if (!pair) {
    report.forEach((r) => {
      if (r.type === 'candidate-pair' && r.state === 'succeeded' && (r.nominated || r.selected)) pair = pair || r;
    });
  }
  return pair;
}

function describeCandidate(c) {
  if (!c) return null;
  const proto = c.candidateType === 'relay' ? c.relayProtocol : c.protocol;
  return `${c.candidateType}/${proto} ${c.address || c.ip}:${c.port}`;
}

/** Every candidate pair ICE tried, for diagnosing why a path was (not) chosen. */
function candidatePairs(report) {
  const pairs = [];
  report.forEach((r) => {
    if (r.type !== 'candidate-pair') return;
    pairs.push({
      local: describeCandidate(report.get(r.localCandidateId)),
      remote: describeCandidate(report.get(r.remoteCandidateId)),
      state: r.state,
      nominated: !!r.nominated,
      rtt: typeof r.currentRoundTripTime === 'number' ? Math.round(r.currentRoundTripTime * 1000) : null,
    });
  });
  return pairs;
}

/** One plain summary of a peer connection; `detail` adds every candidate pair. */
export async function summarize(pc, { detail = false } = {}) {
  const report = await pc.getStats();
  const out = {
    iceState: pc.iceConnectionState,
    connectionState: pc.connectionState,
    candidateType: null,
    relayProtocol: null,
    remoteCandidateType: null,
    localAddress: null,
    rtt: null,
    ...videoNumbers({}),
    audioBytesReceived: 0,
    bytesSent: 0,
  };
  const pair = selectedPair(report);
  if (pair) {
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    if (local) {
      out.candidateType = local.candidateType || null;
      out.localAddress = local.address || local.ip || null;
      if (local.candidateType === 'relay') out.relayProtocol = local.relayProtocol || null;
    }
    if (remote) out.remoteCandidateType = remote.candidateType || null;
    if (typeof pair.currentRoundTripTime === 'number') out.rtt = Math.round(pair.currentRoundTripTime * 1000);
  }
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      // One video stream per peer; if a renegotiation left two, the busier one is the live one.
      if ((r.bytesReceived || 0) >= out.bytesReceived) Object.assign(out, videoNumbers(r, report));
    } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      out.audioBytesReceived += r.bytesReceived || 0;
    } else if (r.type === 'outbound-rtp') {
      out.bytesSent += r.bytesSent || 0;
    }
  });
  if (detail) out.candidatePairs = candidatePairs(report);
  return out;
}

/** The MIME type ('video/VP8', 'video/H264') of an RTP stream's codec, from its getStats report. */
export function codecOf(r, report) {
  const codec = r.codecId && report ? report.get(r.codecId) : null;
  return (codec && codec.mimeType) || null;
}

/**
 * The video numbers state() reports for a peer, from one inbound-rtp entry (zeros from `{}`);
 * `report` (the whole getStats report) resolves the codec.
 */
function videoNumbers(r, report = null) {
  return {
    codec: codecOf(r, report),
    framesDecoded: r.framesDecoded || 0,
    frameWidth: r.frameWidth || 0,
    frameHeight: r.frameHeight || 0,
    freezeCount: r.freezeCount || 0,
    totalFreezesDuration: r.totalFreezesDuration || 0,
    bytesReceived: r.bytesReceived || 0,
  };
}

/** What a participant of a group room shows before any of its media arrived. */
export function emptyInbound() {
  return {
    ...videoNumbers({}),
    audioBytesReceived: 0,
    keyFramesDecoded: 0,
    pliCount: 0, // keyframe requests sent: a picture that never starts shows here
    videoSource: null, // 'camera' | 'screen': which section the video numbers come from
  };
}

/**
 * Group rooms: one summary per remote participant from the subscribe connection's inbound streams.
 * `sections` is mid -> {participantId, source, kind} (sfu.js); an inbound-rtp names its section by
 * `mid`, or else by its receiver's track (`trackMids`: track id -> mid). Video is the participant's
 * camera (its screen only when it sends no camera), audio its microphone.
 */
export function inboundByParticipant(report, sections, trackMids = new Map()) {
  const out = new Map();
  const entry = (id) => {
    if (!out.has(id)) out.set(id, emptyInbound());
    return out.get(id);
  };
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    const section = sections.get(r.mid ?? trackMids.get(r.trackIdentifier));
    if (!section || !section.participantId) return;
    const e = entry(section.participantId);
    if (r.kind === 'audio') {
      if (section.source === 'microphone') e.audioBytesReceived += r.bytesReceived || 0;
    } else if (r.kind === 'video' && (section.source === 'camera' || e.videoSource !== 'camera')) {
      e.videoSource = section.source;
      Object.assign(e, videoNumbers(r, report));
      e.keyFramesDecoded = r.keyFramesDecoded || 0;
      e.pliCount = r.pliCount || 0;
    }
  });
  return out;
}

/** "Direct", "TURN UDP", "TURN TCP", "TURN TLS" (our relay) or "Relayed" (only theirs). */
export function pathLabel(s) {
  if (!s || !s.candidateType) return null;
  if (s.candidateType === 'relay') return s.relayProtocol ? `TURN ${s.relayProtocol.toUpperCase()}` : 'TURN';
  if (s.remoteCandidateType === 'relay') return 'Relayed';
  return 'Direct';
}
