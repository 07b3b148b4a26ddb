// Unit tests of the browser client's pure modules, run with `node --test` (no browser, no build).
// tests/browser/test_client_units.py runs this file under pytest.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { rtcConfiguration, turnTransport } from '../../../src/meet443/web/static/js/ice.js';
import {
  cleanDisplayName,
  isValidRoomName,
  randomRoomName,
  readParams,
  roomFromInput,
  roomNameFromPath,
  slugifyRoomName,
} from '../../../src/meet443/web/static/js/params.js';
import { pathLabel } from '../../../src/meet443/web/static/js/stats.js';

const ICE = [
  {
    urls: ['turn:10.0.0.1:443?transport=udp', 'turn:10.0.0.1:443?transport=tcp', 'turns:10.0.0.1:443?transport=tcp'],
    username: '1700000000:abc',
    credential: 'pw',
  },
];

test('room names follow the contract', () => {
  assert.ok(isValidRoomName('team-sync'));
  assert.ok(isValidRoomName('a'));
  assert.ok(!isValidRoomName('-team'));
  assert.ok(!isValidRoomName('Team'));
  assert.ok(!isValidRoomName('check'));
  assert.ok(!isValidRoomName('static'));
  assert.ok(!isValidRoomName('a'.repeat(65)));
  assert.equal(roomNameFromPath('/team-sync'), 'team-sync');
  assert.equal(roomNameFromPath('/team-sync/'), 'team-sync');
  assert.equal(roomNameFromPath('/'), '');
  assert.equal(slugifyRoomName('  Café Team Sync! '), 'cafe-team-sync');
  assert.equal(roomFromInput('https://meet.example.com/weekly-1?roomKey=x'), 'weekly-1');
  assert.equal(roomFromInput('Weekly 1'), 'weekly-1');
  assert.equal(roomFromInput('check'), '');
  assert.equal(roomFromInput('!!!'), '');
  for (let i = 0; i < 50; i += 1) assert.ok(isValidRoomName(randomRoomName()));
  assert.equal(cleanDisplayName('  Ann\u0007 \n'), 'Ann');
});

test('readParams strips the room key from the address and keeps the rest', () => {
  const calls = [];
  const loc = { search: '?displayName=Ann&roomKey=s3cret&autojoin=1&relay=TLS', pathname: '/r1', hash: '#x' };
  const history = { state: null, replaceState: (...args) => calls.push(args) };
  const p = readParams(loc, history);
  assert.deepEqual(p, { displayName: 'Ann', autojoin: true, roomKey: 's3cret', relay: 'tls', videoCodec: 'vp8' });
  assert.equal(calls.length, 1);
  assert.equal(calls[0][2], '/r1?displayName=Ann&autojoin=1&relay=TLS#x');
  // Without a key the address is left alone; an unknown relay value is ignored.
  const none = readParams({ search: '?relay=carrier-pigeon', pathname: '/r1', hash: '' }, history);
  assert.equal(none.relay, null);
  assert.equal(none.autojoin, false);
  assert.equal(calls.length, 1);
});

test('readParams: videoCodec is vp8 or h264, VP8 unless asked', () => {
  const history = { state: null, replaceState: () => assert.fail('nothing to strip') };
  const codec = (search) => readParams({ search, pathname: '/r1', hash: '' }, history).videoCodec;
  assert.equal(codec(''), 'vp8');
  assert.equal(codec('?videoCodec=h264'), 'h264');
  assert.equal(codec('?videoCodec=H264'), 'h264');
  assert.equal(codec('?videoCodec=VP8'), 'vp8');
  assert.equal(codec('?videoCodec=av1'), 'vp8', 'what the SFU does not take falls back to the default');
});

test('turnTransport names the TURN transport of a URI', () => {
  assert.equal(turnTransport('turn:h:443?transport=udp'), 'udp');
  assert.equal(turnTransport('turn:h:443'), 'udp');
  assert.equal(turnTransport('turn:h:443?transport=tcp'), 'tcp');
  assert.equal(turnTransport('turns:h:443?transport=tcp'), 'tls');
  assert.equal(turnTransport('TURNS:h'), 'tls');
  assert.equal(turnTransport('stun:h:443'), null);
});

test('rtcConfiguration honours the server policy and ?relay=', () => {
  const all = rtcConfiguration(ICE, 'all', null);
  assert.equal(all.iceTransportPolicy, 'all');
  assert.equal(all.iceServers[0].urls.length, 3);
  assert.equal(rtcConfiguration(ICE, 'relay', null).iceTransportPolicy, 'relay');
  for (const [relay, uri] of [
    ['udp', 'turn:10.0.0.1:443?transport=udp'],
    ['tcp', 'turn:10.0.0.1:443?transport=tcp'],
    ['tls', 'turns:10.0.0.1:443?transport=tcp'],
  ]) {
    const c = rtcConfiguration(ICE, 'all', relay);
    assert.equal(c.iceTransportPolicy, 'relay');
    assert.deepEqual(c.iceServers, [{ ...ICE[0], urls: [uri] }]);
  }
  // A single URL string is accepted too; servers left without URLs are dropped.
  const c = rtcConfiguration([{ urls: 'stun:h' }, { urls: 'turn:h?transport=tcp' }], 'all', 'tcp');
  assert.deepEqual(c.iceServers, [{ urls: ['turn:h?transport=tcp'] }]);
});

test('pathLabel says how media travels', () => {
  assert.equal(pathLabel({ candidateType: 'host' }), 'Direct');
  assert.equal(pathLabel({ candidateType: 'srflx', remoteCandidateType: 'relay' }), 'Relayed');
  assert.equal(pathLabel({ candidateType: 'relay', relayProtocol: 'tls' }), 'TURN TLS');
  assert.equal(pathLabel({ candidateType: 'relay', relayProtocol: 'udp' }), 'TURN UDP');
  assert.equal(pathLabel({ candidateType: null }), null);
});
