// Group rooms: the pure parts of the client's SFU session (which section shows on which tile) and
// of its statistics (whose inbound streams are whose). Run with `node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  applyTracks,
  preferVideoCodec,
  preferredVideoCodecs,
  tileSections,
} from '../../../src/meet443/web/static/js/sfu.js';
import { emptyInbound, inboundByParticipant } from '../../../src/meet443/web/static/js/stats.js';

const OFFER_TRACKS = [
  { mid: 'a0', kind: 'audio', participantId: 'p2', source: 'microphone' },
  { mid: 'a1', kind: 'audio', participantId: 'p3', source: 'microphone' },
  { mid: 'v0', kind: 'video', participantId: 'p2', source: 'camera' },
  { mid: 'v1', kind: 'video', participantId: null, source: null },
];

test('a subscribe offer maps every section; idle ones map to nobody', () => {
  const sections = applyTracks(new Map(), OFFER_TRACKS);
  assert.deepEqual(sections.get('v0'), { participantId: 'p2', source: 'camera', kind: 'video' });
  assert.deepEqual(sections.get('v1'), { participantId: null, source: null, kind: 'video' });
  assert.deepEqual(
    [...tileSections(sections)],
    [
      ['p2', ['a0', 'v0']],
      ['p3', ['a1']],
    ],
  );
});

test('a tracks message moves a section to another participant and keeps the rest', () => {
  const before = applyTracks(new Map(), OFFER_TRACKS);
  const after = applyTracks(before, [{ mid: 'v0', kind: 'video', participantId: 'p3', source: 'camera' }]);
  assert.equal(before.get('v0').participantId, 'p2', 'the old mapping is not changed in place');
  assert.deepEqual(
    [...tileSections(after)],
    [
      ['p2', ['a0']],
      ['p3', ['a1', 'v0']],
    ],
  );
});

test('sections gone from the SDP are pruned; junk entries are skipped', () => {
  const sections = applyTracks(new Map(), [...OFFER_TRACKS, null, { kind: 'video' }], new Set(['a0', 'v0']));
  assert.deepEqual([...sections.keys()], ['a0', 'v0']);
});

test('a screen share is a tile of its own; two sections for one source show only the first', () => {
  const sections = applyTracks(new Map(), [
    { mid: 'v0', kind: 'video', participantId: 'p2', source: 'camera' },
    { mid: 'v1', kind: 'video', participantId: 'p2', source: 'camera' },
    { mid: 's0', kind: 'video', participantId: 'p2', source: 'screen' },
  ]);
  assert.deepEqual(
    [...tileSections(sections)],
    [
      ['p2', ['v0']],
      ['p2:screen', ['s0']],
    ],
  );
});

test('inbound streams are summed per participant: camera video, microphone audio', () => {
  const sections = applyTracks(new Map(), [
    ...OFFER_TRACKS,
    { mid: 's0', kind: 'video', participantId: 'p3', source: 'screen' },
  ]);
  const report = new Map(
    [
      { type: 'inbound-rtp', kind: 'audio', mid: 'a0', bytesReceived: 900 },
      { type: 'inbound-rtp', kind: 'audio', mid: 'a1', bytesReceived: 400 },
      {
        type: 'inbound-rtp',
        kind: 'video',
        mid: 'v0',
        bytesReceived: 5000,
        framesDecoded: 60,
        frameWidth: 640,
        codecId: 'c102',
      },
      { id: 'c102', type: 'codec', mimeType: 'video/H264', payloadType: 102 },
      // No `mid` (older Chrome): found by the receiver's track instead.
      { type: 'inbound-rtp', kind: 'video', trackIdentifier: 'track-s0', bytesReceived: 7000, framesDecoded: 20 },
      { type: 'inbound-rtp', kind: 'video', mid: 'v1', bytesReceived: 99, framesDecoded: 1 }, // idle
      { type: 'outbound-rtp', kind: 'video', mid: 'v0', bytesSent: 1 },
    ].map((r, i) => [r.id || `r${i}`, r]),
  );
  const byParticipant = inboundByParticipant(report, sections, new Map([['track-s0', 's0']]));
  assert.deepEqual([...byParticipant.keys()].sort(), ['p2', 'p3']);
  assert.deepEqual(byParticipant.get('p2'), {
    ...emptyInbound(),
    audioBytesReceived: 900,
    bytesReceived: 5000,
    framesDecoded: 60,
    frameWidth: 640,
    codec: 'video/H264',
    videoSource: 'camera',
  });
  // p3 sends no camera: its screen is what it shows.
  assert.equal(byParticipant.get('p3').videoSource, 'screen');
  assert.equal(byParticipant.get('p3').framesDecoded, 20);
  assert.equal(byParticipant.get('p3').audioBytesReceived, 400);
  assert.equal(byParticipant.get('p3').codec, null, 'no codecId: no codec');
});

// What Chromium's RTCRtpSender.getCapabilities('video') lists (Chromium 156, Debian), abridged.
const CAPABILITIES = [
  { mimeType: 'video/VP8', clockRate: 90000 },
  { mimeType: 'video/rtx', clockRate: 90000 },
  { mimeType: 'video/H264', sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f' },
  { mimeType: 'video/H264', sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f' },
  { mimeType: 'video/H264', sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f' },
  { mimeType: 'video/H264', sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f' },
  { mimeType: 'video/H264', sdpFmtpLine: 'level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f' },
  { mimeType: 'video/AV1', sdpFmtpLine: 'level-idx=5;profile=0;tier=0' },
  { mimeType: 'video/VP9', sdpFmtpLine: 'profile-id=0' },
  { mimeType: 'video/red' },
  { mimeType: 'video/ulpfec' },
];
const describe = (codecs) =>
  codecs.map((c) => `${c.mimeType.slice(6)}${/profile-level-id=(\w+)/.exec(c.sdpFmtpLine || '')?.[1] || ''}`);

test('videoCodec=h264 offers packetization-mode 1 Constrained Baseline, then Baseline, VP8 and rtx', () => {
  const ordered = preferredVideoCodecs(CAPABILITIES, 'h264');
  // VP8 after H.264: the SFU answers it first while someone in the room cannot decode H.264.
  assert.deepEqual(describe(ordered), ['H26442e01f', 'H26442001f', 'VP8', 'rtx']);
  assert.ok(ordered.every((c) => CAPABILITIES.includes(c)), 'only what the browser has');
});

test('videoCodec=vp8 offers VP8 and rtx; a codec the browser lacks gives null', () => {
  assert.deepEqual(describe(preferredVideoCodecs(CAPABILITIES, 'vp8')), ['VP8', 'rtx']);
  const vp8Only = CAPABILITIES.filter((c) => !c.mimeType.includes('H264'));
  assert.equal(preferredVideoCodecs(vp8Only, 'h264'), null);
  // packetization-mode 0 and the Main profile are no use: the SFU does not take them.
  const unusable = CAPABILITIES.filter((c) => !/mode=1;profile-level-id=42/.test(c.sdpFmtpLine || ''));
  assert.equal(preferredVideoCodecs(unusable, 'h264'), null);
});

test('preferVideoCodec falls back from the receive to the send capabilities', () => {
  const saved = { receiver: globalThis.RTCRtpReceiver, sender: globalThis.RTCRtpSender };
  const warn = console.warn;
  console.warn = () => {};
  try {
    globalThis.RTCRtpReceiver = { getCapabilities: () => ({ codecs: [{ mimeType: 'video/VP8' }] }) };
    globalThis.RTCRtpSender = { getCapabilities: () => ({ codecs: CAPABILITIES }) };
    const set = [];
    assert.equal(preferVideoCodec({ setCodecPreferences: (c) => set.push(c) }, 'h264'), true);
    assert.equal(set[0][0].sdpFmtpLine.endsWith('42e01f'), true);
    const refusing = {
      setCodecPreferences: () => {
        throw new Error('InvalidModificationError');
      },
    };
    assert.equal(preferVideoCodec(refusing, 'h264'), false);
    assert.equal(preferVideoCodec({}, 'h264'), false, 'no setCodecPreferences (old browsers)');
  } finally {
    globalThis.RTCRtpReceiver = saved.receiver;
    globalThis.RTCRtpSender = saved.sender;
    console.warn = warn;
  }
});
