// Group rooms: the pure parts of the client's SFU session (which section shows on which tile) and
// of its statistics (whose inbound streams are whose). Run with `node --test`.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyTracks, tileSections } from '../../../src/meet443/web/static/js/sfu.js';
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
      { type: 'inbound-rtp', kind: 'video', mid: 'v0', bytesReceived: 5000, framesDecoded: 60, frameWidth: 640 },
      // No `mid` (older Chrome): found by the receiver's track instead.
      { type: 'inbound-rtp', kind: 'video', trackIdentifier: 'track-s0', bytesReceived: 7000, framesDecoded: 20 },
      { type: 'inbound-rtp', kind: 'video', mid: 'v1', bytesReceived: 99, framesDecoded: 1 }, // idle
      { type: 'outbound-rtp', kind: 'video', mid: 'v0', bytesSent: 1 },
    ].map((r, i) => [`r${i}`, r]),
  );
  const byParticipant = inboundByParticipant(report, sections, new Map([['track-s0', 's0']]));
  assert.deepEqual([...byParticipant.keys()].sort(), ['p2', 'p3']);
  assert.deepEqual(byParticipant.get('p2'), {
    ...emptyInbound(),
    audioBytesReceived: 900,
    bytesReceived: 5000,
    framesDecoded: 60,
    frameWidth: 640,
    videoSource: 'camera',
  });
  // p3 sends no camera: its screen is what it shows.
  assert.equal(byParticipant.get('p3').videoSource, 'screen');
  assert.equal(byParticipant.get('p3').framesDecoded, 20);
  assert.equal(byParticipant.get('p3').audioBytesReceived, 400);
});
