// Rendering: a few functions that read the one state object and bring the DOM in line with it.
// They never keep state of their own beyond DOM nodes keyed by participant id (so a <video> is
// not recreated, and does not flicker, on every render). All user input goes to `actions`.

import { streams } from './state.js';
import { pathLabel } from './stats.js';

const $ = (id) => document.getElementById(id);

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
    $('ctl-devices').addEventListener('click', () => a.toggleDeviceMenu());
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !$('device-menu').hidden) a.toggleDeviceMenu(false);
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
        if (action === 'admit') a.admit(pid);
        else if (action === 'reject') a.reject(pid);
        else if (action === 'kick') a.kick(pid);
        else if (action === 'mute') a.muteParticipant(pid, kind);
      });
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
      this.renderGrid(s);
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
    this.renderToggle($('pre-mic'), s.local.audio && s.local.hasAudio, 'microphone');
    this.renderToggle($('pre-cam'), s.local.video && s.local.hasVideo, 'camera');
    for (const kind of ['audioinput', 'videoinput']) this.renderDeviceSelect(kind, s);
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

  renderToggle(button, on, what) {
    button.setAttribute('aria-pressed', String(on));
    button.classList.toggle('off', !on);
    button.title = on ? `Turn ${what} off` : `Turn ${what} on`;
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
  }

  makeTile(key, id = key) {
    const el = $('tile-template').content.firstElementChild.cloneNode(true);
    el.dataset.id = key;
    el.classList.add(hueClass(id));
    return {
      el,
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
    tile.el.classList.toggle('speaking', s.room.mode === 'group' && !!s.speaker && s.speaker === p.id);
    tile.el.classList.toggle('video-off', !videoOn);
    tile.el.classList.toggle('away', p.connected === false);
    this.attach(tile.video, stream, true);
    if (!p.self) this.attachAudio(tile.audio, stream);
    setText(tile.avatar, initials(p.displayName));
    setText(tile.name, p.self ? `${p.displayName} (you)` : p.displayName + (p.host ? ' · host' : ''));
    show(tile.mic, p.self ? !s.local.audio : p.audio === false);
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
    show(tile.mic, false);
    show(tile.badge, false);
    show(tile.state, false);
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
      const key = m.clientMessageId || `seq-${m.seq}`;
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
      setText(li.querySelector('.chat-text'), m.text); // text, never HTML
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
    this.renderToggle($('ctl-mic'), s.local.audio && s.local.hasAudio, 'microphone');
    this.renderToggle($('ctl-cam'), (s.local.video && s.local.hasVideo) || s.local.screen, 'camera');
    const screen = $('ctl-screen');
    screen.setAttribute('aria-pressed', String(s.local.screen));
    screen.classList.toggle('active', s.local.screen);
    screen.title = s.local.screen ? 'Stop sharing' : 'Share your screen';
    screen.hidden = !(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
    $('ctl-chat').setAttribute('aria-pressed', String(s.panel === 'chat'));
    $('ctl-people').setAttribute('aria-pressed', String(s.panel === 'people'));
    show($('unread'), s.unread > 0 && s.panel !== 'chat');
    show($('knock-dot'), s.host && s.knocks.length > 0 && s.panel !== 'people');
    this.renderDeviceMenu(s);
  }

  /** The in-call camera / microphone menu: the same lists as the pre-join screen. */
  renderDeviceMenu(s) {
    $('ctl-devices').setAttribute('aria-expanded', String(s.deviceMenu));
    show($('device-menu'), s.deviceMenu);
    if (!s.deviceMenu) return;
    for (const kind of ['audioinput', 'videoinput']) this.renderDeviceSelect(kind, s, $(`call-${kind}-select`));
  }

  renderToast(s) {
    const toast = $('toast');
    setText(toast, s.notice ? s.notice.text : '');
    toast.classList.toggle('warn', !!s.notice && s.notice.kind === 'warn');
    show(toast, !!s.notice);
    show($('audio-unlock'), s.audioBlocked && s.phase === 'in-call');
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
