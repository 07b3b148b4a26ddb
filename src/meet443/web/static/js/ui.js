// Rendering: a few functions that read the one state object and bring the DOM in line with it.
// They never keep state of their own beyond DOM nodes keyed by participant id (so a <video> is
// not recreated, and does not flicker, on every render). All user input goes to `actions`.

import { linkParts } from './links.js';
import { shareableUrl } from './params.js';
import { streams } from './state.js';
import { pathLabel } from './stats.js';

const $ = (id) => document.getElementById(id);

/** Output device choice needs HTMLMediaElement.setSinkId (Chromium, Firefox 116+; not Safari). */
const CAN_CHOOSE_SPEAKERS = typeof HTMLMediaElement !== 'undefined' && 'setSinkId' in HTMLMediaElement.prototype;

/**
 * Google Meet's shortcuts (Ctrl or ⌘): a person who knows them there finds them here. The tooltips
 * and aria-keyshortcuts in room.html name them.
 */
const SHORTCUTS = [
  { key: 'd', alt: false, action: (a) => a.toggleMic() },
  { key: 'e', alt: false, action: (a) => a.toggleCam() },
  { key: 'h', alt: true, action: (a) => a.raiseHand() },
  { key: 'c', alt: true, action: (a) => a.togglePanel('chat') },
  { key: 'p', alt: true, action: (a) => a.togglePanel('people') },
];

function show(el, visible) {
  if (el.hidden === visible) el.hidden = !visible;
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function initials(name) {
  const words = (name || '').trim().split(/\s+/).filter(Boolean);
  if (!words.length) return '?';
  const first = [...words[0]][0] || '';
  const last = words.length > 1 ? [...words[words.length - 1]][0] || '' : '';
  return (first + last).toUpperCase();
}

/** A stable hue per participant, so avatars are told apart at a glance. */
function hueClass(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hue-${h % 8}`;
}

// Status screens: phase (and failure code) → what to tell the person and what they can do.
const STATUS = {
  joining: { icon: 'spin', title: 'Joining…', text: 'Connecting to the meeting.' },
  knocking: {
    icon: 'lock',
    title: 'Asking to join',
    text: 'This meeting is locked. Someone in the meeting will let you in soon.',
    cancel: true,
  },
  rejected: { icon: 'stop', title: 'You were not let in', text: 'A host declined your request to join.' },
  kicked: { icon: 'stop', title: 'You were removed', text: 'A host removed you from this meeting.' },
  ended: { icon: 'end', title: 'The meeting has ended', text: 'A host ended the meeting for everyone.' },
  left: { icon: 'wave', title: 'You left the meeting', text: 'Thanks for joining.', retry: true },
};
const FAILURES = {
  'room-full': {
    icon: 'full',
    title: 'This meeting is full',
    text: 'Video meetings here hold at most 4 people. Try again when someone leaves.',
    retry: true,
  },
  'meeting-ended': { icon: 'end', title: 'The meeting has ended', text: 'This meeting is over.' },
  'room-not-found': {
    icon: 'stop',
    title: 'No such meeting',
    text: 'Check the link you were given; this server only opens meetings created in advance.',
  },
  'bad-room-name': {
    icon: 'stop',
    title: 'Not a meeting address',
    text: 'Meeting names use lower-case letters, digits and dashes.',
  },
  'knock-timeout': {
    icon: 'stop',
    title: 'Nobody let you in',
    text: 'No host answered your request to join within 5 minutes.',
    retry: true,
  },
  'too-many-joins': { icon: 'stop', title: 'Too many attempts', text: 'Please wait a minute, then try again.', retry: true, check: true },
  'unsupported-version': { icon: 'stop', title: 'Please reload', text: 'The server was updated; reload this page.', retry: true },
  unsupported: {
    icon: 'stop',
    title: 'This browser cannot join',
    text: 'Video meetings need a current browser with WebRTC and secure WebSockets.',
    check: true,
  },
  connection: {
    icon: 'net',
    title: 'Could not reach the meeting',
    text: 'The connection to the server was lost and could not be restored.',
    retry: true,
    check: true,
  },
};

const MEDIA_ERRORS = {
  denied: 'Camera and microphone are blocked. Allow them for this site (the icon in the address bar), then reload — or join without them.',
  'not-found': 'No camera or microphone was found. You can still join and use chat.',
  'in-use': 'Your camera or microphone is being used by another app. Close it and try again.',
  unsupported: 'This browser does not give this page a camera or microphone (it needs HTTPS and a current browser).',
  'screen-failed': 'Screen sharing did not start.',
};

export class RoomView {
  constructor(actions) {
    this.actions = actions;
    this.tiles = new Map(); // participant id (or `<id>:screen`) -> {el, video, audio, ...}
    this.chatNodes = new Map(); // clientMessageId or seq -> <li>
    this.bind();
  }

  bind() {
    const a = this.actions;
    $('join-form').addEventListener('submit', (e) => {
      e.preventDefault();
      a.join($('name-input').value);
    });
    $('name-input').addEventListener('input', (e) => a.setName(e.target.value));
    $('pre-mic').addEventListener('click', () => a.toggleMic());
    $('pre-cam').addEventListener('click', () => a.toggleCam());
    $('ctl-mic').addEventListener('click', () => a.toggleMic());
    $('ctl-cam').addEventListener('click', () => a.toggleCam());
    $('ctl-screen').addEventListener('click', () => a.toggleScreen());
    $('ctl-chat').addEventListener('click', () => a.togglePanel('chat'));
    $('ctl-people').addEventListener('click', () => a.togglePanel('people'));
    $('tab-chat').addEventListener('click', () => a.openPanel('chat'));
    $('tab-people').addEventListener('click', () => a.openPanel('people'));
    $('sidebar-close').addEventListener('click', () => a.openPanel(null));
    $('ctl-leave').addEventListener('click', () => a.leave());
    $('copy-link').addEventListener('click', () => a.copyLink());
    $('status-retry').addEventListener('click', () => a.rejoin());
    $('status-cancel').addEventListener('click', () => a.leave());
    $('audio-unlock-button').addEventListener('click', () => this.unlockAudio());
    for (const kind of ['audioinput', 'videoinput']) {
      $(`${kind}-select`).addEventListener('change', (e) => a.selectDevice(kind, e.target.value));
      $(`call-${kind}-select`).addEventListener('change', (e) => a.selectDevice(kind, e.target.value));
    }
    $('audiooutput-select').addEventListener('change', (e) => a.selectDevice('audiooutput', e.target.value));
    $('call-audiooutput-select').addEventListener('change', (e) => a.selectDevice('audiooutput', e.target.value));
    $('ctl-devices').addEventListener('click', () => a.toggleDeviceMenu());
    $('ctl-hand').addEventListener('click', () => a.raiseHand());
    $('ctl-more').addEventListener('click', () => a.toggleMoreMenu());
    $('menu-hand').addEventListener('click', () => {
      a.raiseHand();
      a.toggleMoreMenu(false);
    });
    $('menu-screen').addEventListener('click', () => {
      a.toggleMoreMenu(false);
      a.toggleScreen();
    });
    $('menu-people').addEventListener('click', () => {
      a.toggleMoreMenu(false);
      a.togglePanel('people');
    });
    $('menu-copy').addEventListener('click', () => {
      a.toggleMoreMenu(false);
      a.copyLink();
    });
    $('menu-devices').addEventListener('click', () => a.toggleDeviceMenu(true));
    for (const button of document.querySelectorAll('#more-menu .reaction')) {
      button.addEventListener('click', () => a.react(button.dataset.emoji));
    }
    $('invite-close').addEventListener('click', () => a.dismissInvite());
    $('invite-copy').addEventListener('click', () => a.copyLink());
    $('invite-share').addEventListener('click', () => a.shareLink());
    document.addEventListener('keydown', (e) => this.onKey(e));
    // A tap outside an open menu closes it, as on every phone.
    document.addEventListener('pointerdown', (e) => {
      if (!$('more-menu').hidden && !e.target.closest('#more-menu, #ctl-more')) a.toggleMoreMenu(false);
      if (!$('device-menu').hidden && !e.target.closest('#device-menu, #ctl-devices, #menu-devices')) {
        a.toggleDeviceMenu(false);
      }
    });
    $('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('chat-input');
      const text = input.value.trim();
      if (text) a.sendChat(text);
      input.value = '';
    });
    $('lock-toggle').addEventListener('change', (e) => a.lock(e.target.checked));
    $('end-all').addEventListener('click', () => a.endForAll());
    // Buttons inside lists are made per render; one delegated listener serves them all.
    for (const id of ['knock-list', 'people-list', 'grid']) {
      $(id).addEventListener('click', (e) => {
        const button = e.target.closest('button[data-action]');
        if (!button) return;
        const { action, id: pid, kind } = button.dataset;
        const tile = button.closest('.tile');
        if (action === 'pin') a.pin(tile.dataset.id);
        else if (action === 'fullscreen') fullscreen(tile);
        else if (action === 'admit') a.admit(pid);
        else if (action === 'reject') a.reject(pid);
        else if (action === 'kick') a.kick(pid);
        else if (action === 'mute') a.muteParticipant(pid, kind);
      });
    }
  }

  onKey(e) {
    if (e.key === 'Escape') {
      if (!$('device-menu').hidden) this.actions.toggleDeviceMenu(false);
      if (!$('more-menu').hidden) {
        this.actions.toggleMoreMenu(false);
        $('ctl-more').focus();
      }
      return;
    }
    if (!(e.ctrlKey || e.metaKey) || e.shiftKey || document.body.dataset.phase !== 'in-call') return;
    const shortcut = SHORTCUTS.find((k) => k.key === e.key.toLowerCase() && k.alt === e.altKey);
    if (!shortcut) return;
    e.preventDefault(); // Ctrl+D would bookmark the page, Ctrl+E search
    shortcut.action(this.actions);
  }

  /** The microphone level (0..1) on one's own tile, the microphone button and the preview. */
  renderLevel(level) {
    // Speech RMS rarely passes 0.3; scale so that talking fills most of the bar.
    const value = String(Math.min(1, level * 4).toFixed(2));
    for (const el of [$('pre-level'), $('ctl-mic'), this.selfLevel]) {
      if (el && el.style.getPropertyValue('--level') !== value) el.style.setProperty('--level', value);
    }
  }

  render(s) {
    document.body.dataset.phase = s.phase;
    document.body.classList.toggle('embedded', s.embedded);
    const title = s.roomName ? `${s.roomName} · meet443` : 'meet443';
    if (document.title !== title) document.title = title;
    this.renderTopbar(s);
    this.renderBanner(s);
    show($('loading'), s.phase === 'loading');
    show($('prejoin'), s.phase === 'prejoin');
    const inCall = s.phase === 'in-call';
    show($('call'), inCall);
    show($('controls'), inCall);
    const statusVisible = !['loading', 'prejoin', 'in-call'].includes(s.phase);
    show($('status'), statusVisible);
    if (s.phase === 'prejoin') this.renderPrejoin(s);
    if (statusVisible) this.renderStatus(s);
    if (inCall) {
      setText($('call-title'), `Meeting ${s.roomName}`);
      this.renderGrid(s);
      this.renderInvite(s);
      this.renderSidebar(s);
      this.renderControls(s);
    } else if (this.tiles.size) {
      this.clearTiles();
    }
    this.renderToast(s);
  }

  renderTopbar(s) {
    setText($('room-name'), s.roomName);
    show($('lock-badge'), s.phase === 'in-call' && s.room.locked);
    const badge = $('net-badge');
    const links = Object.values(s.links);
    if (s.phase === 'in-call' && links.length) {
      const labels = [...new Set(links.map((l) => pathLabel(l)).filter(Boolean))];
      const rtts = links.map((l) => l.rtt).filter((r) => typeof r === 'number');
      const text = labels.length
        ? `${labels.join(' / ')}${rtts.length ? ` · ${Math.max(...rtts)} ms` : ''}`
        : 'Connecting…';
      setText(badge, text);
      badge.classList.toggle('pill-ok', labels.length > 0);
      badge.title = 'How media reaches the others, and the round-trip time';
      show(badge, true);
    } else {
      show(badge, false);
    }
  }

  renderBanner(s) {
    const banner = $('banner');
    let text = '';
    if (s.phase === 'in-call' || s.phase === 'knocking') {
      if (s.signaling === 'reconnecting') text = 'Connection lost. Reconnecting…';
      else if (s.signaling === 'closed') text = 'Disconnected from the meeting.';
    }
    setText($('banner-text'), text);
    show($('banner-check'), s.reconnectAttempts >= 3 || s.signaling === 'closed');
    show(banner, !!text);
  }

  renderPrejoin(s) {
    setText($('prejoin-title'), s.roomName);
    const name = $('name-input');
    if (document.activeElement !== name && name.value !== s.displayName) name.value = s.displayName;
    const video = $('preview-video');
    this.attach(video, streams.get('self'), s.local.hasVideo);
    const camOn = s.local.video && s.local.hasVideo;
    show($('preview-off'), !camOn);
    setText($('preview-avatar'), initials(s.displayName));
    setText($('preview-off-text'), s.local.video && !s.local.hasVideo ? 'No camera' : 'Camera is off');
    this.renderToggle($('pre-mic'), s.local.audio && s.local.hasAudio);
    this.renderToggle($('pre-cam'), s.local.video && s.local.hasVideo);
    for (const kind of ['audioinput', 'videoinput']) this.renderDeviceSelect(kind, s);
    this.renderSpeakers(s, $('audiooutput-select'));
    const err = $('media-error');
    setText(err, s.local.error ? MEDIA_ERRORS[s.local.error] || MEDIA_ERRORS.unsupported : '');
    show(err, !!s.local.error);
    $('join-button').disabled = !s.displayName.trim();
  }

  renderDeviceSelect(kind, s, select = $(`${kind}-select`)) {
    const list = s.local.devices[kind];
    const key = JSON.stringify(list);
    if (select.dataset.key !== key) {
      select.replaceChildren(
        ...(list.length ? list : [{ deviceId: '', label: kind === 'audioinput' ? 'No microphone' : 'No camera' }]).map(
          (d) => new Option(d.label, d.deviceId),
        ),
      );
      select.dataset.key = key;
    }
    if (s.local.selected[kind] && select.value !== s.local.selected[kind]) select.value = s.local.selected[kind];
    select.disabled = list.length === 0;
  }

  /** The label stays ("Microphone"); aria-pressed says whether it is on, the colour shows it. */
  renderToggle(button, on) {
    button.setAttribute('aria-pressed', String(on));
    button.classList.toggle('off', !on);
  }

  /** The speakers list, where the browser can play to a chosen device and lists more than one. */
  renderSpeakers(s, select) {
    const list = s.local.devices.audiooutput;
    show(select.closest('.speakers-field'), CAN_CHOOSE_SPEAKERS && list.length > 0);
    if (CAN_CHOOSE_SPEAKERS && list.length) this.renderDeviceSelect('audiooutput', s, select);
  }

  renderStatus(s) {
    let info = STATUS[s.phase];
    if (s.phase === 'failed') info = FAILURES[s.failure && s.failure.code] || FAILURES.connection;
    if (!info) info = { title: '', text: '' };
    let text = info.text;
    if (s.phase === 'failed' && s.failure && s.failure.message && !FAILURES[s.failure.code]) {
      text = `${info.text} (${s.failure.message})`;
    }
    $('status-icon').dataset.icon = info.icon || '';
    setText($('status-title'), info.title);
    setText($('status-text'), text);
    show($('status-retry'), !!info.retry);
    show($('status-cancel'), !!info.cancel);
    show($('status-check'), !!info.check || s.phase === 'failed');
  }

  /** One tile per participant, self first; tiles are kept and updated, not rebuilt. */
  renderGrid(s) {
    const grid = $('grid');
    // In group rooms a screen share comes on its own section, beside the camera: it gets a tile
    // of its own, right after its sharer's (keyed `<id>:screen`).
    const entries = [];
    for (const id of s.order) {
      if (!s.participants[id]) continue;
      entries.push({ key: id, id });
      if (s.screens.includes(id)) entries.push({ key: `${id}:screen`, id, screen: true });
    }
    const keys = new Set(entries.map((e) => e.key));
    for (const [key, tile] of this.tiles) {
      if (!keys.has(key)) {
        tile.el.remove();
        this.tiles.delete(key);
      }
    }
    entries.forEach(({ key, id, screen }, index) => {
      const p = s.participants[id];
      let tile = this.tiles.get(key);
      if (!tile) {
        tile = this.makeTile(key, id);
        this.tiles.set(key, tile);
      }
      if (grid.children[index] !== tile.el) grid.insertBefore(tile.el, grid.children[index] || null);
      if (screen) this.renderScreenTile(tile, p);
      else this.renderTile(tile, p, s);
    });
    grid.dataset.count = String(Math.min(entries.length, 9));
    // Presenter layout: a pinned tile, else the newest screen share, large; the others in a strip.
    const featured = keys.has(s.pinned) ? s.pinned : [...entries].reverse().find((e) => e.screen || isScreenTile(s, e))?.key;
    grid.classList.toggle('spotlight', !!featured && entries.length > 1);
    for (const [key, tile] of this.tiles) {
      tile.el.classList.toggle('featured', key === featured && entries.length > 1);
      const pinned = key === s.pinned;
      tile.pin.setAttribute('aria-pressed', String(pinned));
      tile.pin.title = pinned ? 'Unpin' : 'Pin (show large)';
    }
    this.renderReactions(s);
  }

  /** Reactions float over their sender's tile; the newest one shows. */
  renderReactions(s) {
    const latest = new Map();
    for (const r of s.reactions) latest.set(r.participantId, r);
    for (const [key, tile] of this.tiles) {
      const r = key.endsWith(':screen') ? null : latest.get(key);
      show(tile.reaction, !!r);
      if (r && tile.reaction.dataset.key !== r.key) {
        tile.reaction.dataset.key = r.key;
        tile.reaction.textContent = r.emoji;
        // Restart the float-up animation for a new reaction of the same person.
        tile.reaction.classList.remove('pop');
        void tile.reaction.offsetWidth;
        tile.reaction.classList.add('pop');
      }
    }
  }

  makeTile(key, id = key) {
    const el = $('tile-template').content.firstElementChild.cloneNode(true);
    el.dataset.id = key;
    el.classList.add(hueClass(id));
    const fullscreenButton = el.querySelector('.tile-full');
    show(fullscreenButton, canFullscreen(el));
    return {
      el,
      pin: el.querySelector('.tile-pin'),
      full: fullscreenButton,
      hand: el.querySelector('.tile-hand'),
      level: el.querySelector('.tile-level'),
      reaction: el.querySelector('.tile-reaction'),
      video: el.querySelector('.tile-video'),
      audio: el.querySelector('.tile-audio'),
      avatar: el.querySelector('.avatar'),
      name: el.querySelector('.tile-name'),
      mic: el.querySelector('.tile-mic'),
      badge: el.querySelector('.tile-badge'),
      state: el.querySelector('.tile-state'),
    };
  }

  renderTile(tile, p, s) {
    const stream = streams.get(p.self ? 'self' : p.id);
    // Through the SFU a remote tile shows the camera only (the screen has its own tile), and only
    // while a section carries it: beyond the last-N video sections a participant is an avatar.
    const sfuCamera = s.room.mode === 'group' && !p.self;
    let videoOn = p.self ? s.local.hasVideo && (s.local.video || s.local.screen) : p.video || p.screen;
    if (sfuCamera) videoOn = !!p.video && !!stream && stream.getVideoTracks().length > 0;
    tile.el.classList.toggle('self', !!p.self);
    tile.el.classList.toggle('screen', !!p.screen && !sfuCamera);
    const speaking = (!!s.speaker && s.speaker === p.id) || s.speaking.includes(p.id);
    tile.el.classList.toggle('speaking', speaking && (p.self ? s.local.audio : p.audio !== false));
    tile.el.classList.toggle('video-off', !videoOn);
    tile.el.classList.toggle('away', p.connected === false);
    this.attach(tile.video, stream, true);
    if (!p.self) {
      this.attachAudio(tile.audio, stream);
      this.routeAudio(tile.audio, s.local.selected.audiooutput);
    }
    setText(tile.avatar, initials(p.displayName));
    setText(tile.name, p.self ? `${p.displayName} (you)` : p.displayName + (p.host ? ' · host' : ''));
    show(tile.mic, p.self ? !s.local.audio : p.audio === false);
    show(tile.hand, p.self ? s.local.hand : !!p.hand);
    tile.el.classList.toggle('hand', p.self ? s.local.hand : !!p.hand);
    show(tile.level, !!p.self && s.local.audio && s.local.hasAudio);
    if (p.self) this.selfLevel = tile.el.querySelector('.tile-level .level-bar');
    this.labelTools(tile, p.self ? 'yourself' : p.displayName);
    const link = s.links[p.id];
    const label = link ? pathLabel(link) : null;
    show(tile.badge, !p.self && !!label);
    if (label) setText(tile.badge, typeof link.rtt === 'number' ? `${label} · ${link.rtt} ms` : label);
    let status = '';
    if (p.connected === false) status = 'Reconnecting…';
    else if (!p.self && s.mediaProblem?.connections.includes(p.id)) status = "Can't connect"; // mediapath.js
    else if (!p.self && link && ['checking', 'new'].includes(link.iceState)) status = 'Connecting…';
    else if (!p.self && link && ['failed', 'disconnected'].includes(link.iceState)) status = 'Connection problem…';
    setText(tile.state, status);
    show(tile.state, !!status);
  }

  /** A screen share received through the SFU: the picture and whose it is, nothing else. */
  renderScreenTile(tile, p) {
    tile.el.classList.add('screen');
    this.attach(tile.video, streams.get(`${p.id}:screen`), true);
    setText(tile.avatar, initials(p.displayName));
    setText(tile.name, `${p.displayName} · screen`);
    this.labelTools(tile, `${p.displayName}'s screen`);
    show(tile.mic, false);
    show(tile.hand, false);
    show(tile.level, false);
    show(tile.badge, false);
    show(tile.state, false);
  }

  labelTools(tile, whose) {
    tile.pin.setAttribute('aria-label', `Pin ${whose}`);
    tile.full.setAttribute('aria-label', `Full screen: ${whose}`);
    tile.full.title = 'Full screen';
  }

  /** Play a remote participant's audio on the chosen speakers (the default device: ''). */
  routeAudio(audio, sinkId) {
    if (!CAN_CHOOSE_SPEAKERS || (audio.dataset.sink || '') === sinkId) return;
    audio.dataset.sink = sinkId;
    audio.setSinkId(sinkId).catch((err) => console.warn('speakers not switched', err));
  }

  /** "You're the only one here": the link to share, while nobody else came. */
  renderInvite(s) {
    const alone = s.order.filter((id) => s.participants[id]).length === 1;
    show($('invite'), alone && !s.inviteDismissed && !s.embedded);
    setText($('invite-url'), shareableUrl());
    show($('invite-share'), typeof navigator.share === 'function');
  }

  attach(video, stream, wanted) {
    const target = wanted && stream ? stream : null;
    // Chrome keeps playing a MediaStream whose tracks change, but not every browser does:
    // attach again when the set of tracks changes.
    const key = target ? target.getTracks().map((t) => t.id).join(',') : '';
    if (video.srcObject === target && video.dataset.tracks === key) return;
    video.dataset.tracks = key;
    video.srcObject = null;
    video.srcObject = target;
    if (target) video.play().catch(() => {});
  }

  attachAudio(audio, stream) {
    if (!stream || audio.srcObject === stream) return;
    audio.srcObject = stream;
    audio.play().catch(() => this.actions.audioBlocked(true));
  }

  unlockAudio() {
    for (const tile of this.tiles.values()) tile.audio.play().catch(() => {});
    this.actions.audioBlocked(false);
  }

  clearTiles() {
    for (const tile of this.tiles.values()) {
      tile.video.srcObject = null;
      tile.audio.srcObject = null;
      tile.el.remove();
    }
    this.tiles.clear();
    this.selfLevel = null;
  }

  renderSidebar(s) {
    const open = s.panel !== null;
    show($('sidebar'), open);
    document.body.classList.toggle('panel-open', open);
    $('tab-chat').setAttribute('aria-selected', String(s.panel === 'chat'));
    $('tab-people').setAttribute('aria-selected', String(s.panel === 'people'));
    show($('panel-chat'), s.panel === 'chat');
    show($('panel-people'), s.panel === 'people');
    if (s.panel !== this.shownPanel) {
      this.shownPanel = s.panel;
      if (s.panel === 'chat') $('chat-input').focus();
    }
    const ids = s.order.filter((id) => s.participants[id]);
    setText($('people-count'), String(ids.length));
    this.renderChat(s);
    this.renderPeople(s, ids);
  }

  renderChat(s) {
    const log = $('chat-log');
    const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    const wanted = new Set();
    s.chat.forEach((m, index) => {
      const key = m.clientMessageId || `${m.epoch}-${m.seq}`;
      wanted.add(key);
      let li = this.chatNodes.get(key);
      if (!li) {
        li = document.createElement('li');
        li.className = 'chat-message';
        const head = document.createElement('div');
        head.className = 'chat-head';
        const who = document.createElement('span');
        who.className = 'chat-from';
        const when = document.createElement('time');
        head.append(who, when);
        const body = document.createElement('p');
        body.className = 'chat-text';
        li.append(head, body);
        this.chatNodes.set(key, li);
      }
      const mine = m.from === s.selfId;
      li.classList.toggle('mine', mine);
      li.classList.toggle('pending', !!m.pending);
      li.dataset.seq = m.seq || '';
      setText(li.querySelector('.chat-from'), mine ? 'You' : m.displayName || 'Someone');
      const time = m.ts ? new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : 'sending…';
      setText(li.querySelector('time'), time);
      renderChatText(li.querySelector('.chat-text'), m.text);
      if (log.children[index] !== li) log.insertBefore(li, log.children[index] || null);
    });
    for (const [key, li] of this.chatNodes) {
      if (!wanted.has(key)) {
        li.remove();
        this.chatNodes.delete(key);
      }
    }
    show($('chat-empty'), s.chat.length === 0);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  renderPeople(s, ids) {
    show($('knocks'), s.host && s.knocks.length > 0);
    show($('host-tools'), s.host);
    $('lock-toggle').checked = !!s.room.locked;
    setText($('end-all'), s.confirmEnd ? 'Click again to end' : 'End for all');
    // Rebuild the lists only when what they show changed: a button must not vanish under a click.
    const key = JSON.stringify([s.host, s.knocks, ids.map((id) => s.participants[id]), s.local.audio]);
    if (key === this.peopleKey) return;
    this.peopleKey = key;
    $('knock-list').replaceChildren(
      ...s.knocks.map((k) => {
        const li = personRow(k.displayName, '');
        li.dataset.id = k.participantId;
        li.querySelector('.row-actions').append(
          actionButton('Admit', 'admit', k.participantId, 'primary small'),
          actionButton('Deny', 'reject', k.participantId, 'ghost small'),
        );
        return li;
      }),
    );
    $('people-list').replaceChildren(
      ...ids.map((id) => {
        const p = s.participants[id];
        const tags = [p.self ? 'you' : '', p.host ? 'host' : '', p.connected === false ? 'reconnecting' : '']
          .filter(Boolean)
          .join(' · ');
        const li = personRow(p.displayName, tags, id);
        li.dataset.id = id;
        const mic = p.self ? s.local.audio : p.audio !== false;
        li.classList.toggle('muted', !mic);
        if (s.host && !p.self) {
          const box = li.querySelector('.row-actions');
          if (p.audio !== false) box.append(actionButton('Mute', 'mute', id, 'ghost small', 'audio'));
          if (p.video) box.append(actionButton('Stop video', 'mute', id, 'ghost small', 'video'));
          box.append(actionButton('Remove', 'kick', id, 'danger small'));
        }
        return li;
      }),
    );
  }

  renderControls(s) {
    this.renderToggle($('ctl-mic'), s.local.audio && s.local.hasAudio);
    this.renderToggle($('ctl-cam'), (s.local.video && s.local.hasVideo) || s.local.screen);
    const canShare = !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    for (const screen of [$('ctl-screen'), $('menu-screen')]) {
      screen.setAttribute('aria-pressed', String(s.local.screen));
      screen.classList.toggle('active', s.local.screen);
      screen.classList.toggle('unsupported', !canShare); // phones cannot share their screen
    }
    for (const hand of [$('ctl-hand'), $('menu-hand')]) {
      hand.setAttribute('aria-pressed', String(s.local.hand));
      hand.classList.toggle('active', s.local.hand);
    }
    $('ctl-chat').setAttribute('aria-pressed', String(s.panel === 'chat'));
    $('ctl-people').setAttribute('aria-pressed', String(s.panel === 'people'));
    const unread = s.panel === 'chat' ? 0 : s.unread;
    setText($('unread'), unread > 99 ? '99+' : String(unread));
    show($('unread'), unread > 0);
    setText($('unread-text'), unread ? `${unread} unread ${unread === 1 ? 'message' : 'messages'}` : '');
    const knocking = s.host && s.knocks.length > 0 && s.panel !== 'people';
    show($('knock-dot'), knocking);
    show($('more-dot'), knocking);
    show($('menu-knock'), knocking);
    $('ctl-more').setAttribute('aria-expanded', String(s.moreMenu));
    show($('more-menu'), s.moreMenu);
    if (s.moreMenu !== this.moreShown) {
      this.moreShown = s.moreMenu;
      // Keyboard and screen-reader users land in the menu they opened.
      if (s.moreMenu) document.querySelector('#more-menu .reaction').focus();
    }
    this.renderDeviceMenu(s);
  }

  /** The in-call camera / microphone menu: the same lists as the pre-join screen. */
  renderDeviceMenu(s) {
    $('ctl-devices').setAttribute('aria-expanded', String(s.deviceMenu));
    show($('device-menu'), s.deviceMenu);
    if (!s.deviceMenu) return;
    for (const kind of ['audioinput', 'videoinput']) this.renderDeviceSelect(kind, s, $(`call-${kind}-select`));
    this.renderSpeakers(s, $('call-audiooutput-select'));
  }

  renderToast(s) {
    const toast = $('toast');
    setText(toast, s.notice ? s.notice.text : '');
    toast.classList.toggle('warn', !!s.notice && s.notice.kind === 'warn');
    show(toast, !!s.notice);
    show($('audio-unlock'), s.audioBlocked && s.phase === 'in-call');
  }
}

/** A chat message's text: plain text nodes, and <a> for http(s) links (never HTML from the sender). */
function renderChatText(el, text) {
  if (el.dataset.text === text) return;
  el.dataset.text = text;
  el.replaceChildren(
    ...linkParts(text).map((part) => {
      if (!part.href) return document.createTextNode(part.text);
      const a = document.createElement('a');
      a.href = part.href;
      a.textContent = part.text;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      return a;
    }),
  );
}

function isScreenTile(s, entry) {
  // Peer-to-peer rooms send a screen share instead of the camera, on the sharer's own tile.
  const p = s.participants[entry.id];
  return s.room.mode !== 'group' && !!p && !!p.screen && !p.self;
}

function canFullscreen(el) {
  return !!(document.fullscreenEnabled && el.requestFullscreen) || !!el.querySelector('video').webkitEnterFullscreen;
}

/** One tile full screen (Escape or the browser's control ends it); iOS can only do it with the video. */
function fullscreen(tile) {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else if (document.fullscreenEnabled && tile.requestFullscreen) {
    tile.requestFullscreen().catch((err) => console.warn('full screen refused', err));
  } else {
    tile.querySelector('video').webkitEnterFullscreen();
  }
}

function personRow(name, tags, id = '') {
  const li = document.createElement('li');
  li.className = `row ${id ? hueClass(id) : ''}`;
  const avatar = document.createElement('span');
  avatar.className = 'avatar small';
  avatar.textContent = initials(name);
  const text = document.createElement('span');
  text.className = 'row-text';
  const n = document.createElement('span');
  n.className = 'row-name';
  n.textContent = name;
  text.append(n);
  if (tags) {
    const t = document.createElement('span');
    t.className = 'row-tags';
    t.textContent = tags;
    text.append(t);
  }
  const actions = document.createElement('span');
  actions.className = 'row-actions';
  li.append(avatar, text, actions);
  return li;
}

function actionButton(label, action, id, cls, kind = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = cls;
  b.textContent = label;
  b.dataset.action = action;
  b.dataset.id = id;
  if (kind) b.dataset.kind = kind;
  return b;
}
