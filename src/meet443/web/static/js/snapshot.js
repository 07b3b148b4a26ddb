// What `window.meet443.state()` returns (for tests and embedders): a plain, JSON-safe copy of the
// page's state, with what only live objects know (connections from getStats, tracks, the level)
// passed in by room.js.

/** `live`: {connections, group (SFU stats or null), level, audioTrack, videoTrack}. */
export function snapshot(s, live) {
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
          hand: !!p.hand,
        };
      }),
    connections: live.connections,
    ...(live.group ? { sfu: live.group } : {}),
    ...(live.regions ? { regions: live.regions } : {}),
    speaker: s.speaker,
    sfuRestarts: s.sfuRestarts,
    speaking: [...s.speaking],
    reactions: s.reactions.map((r) => ({ participantId: r.participantId, emoji: r.emoji })),
    pinned: s.pinned,
    unread: s.unread,
    knocks: s.knocks.map((k) => ({ ...k })),
    chat: s.chat.map((c) => ({
      epoch: c.epoch ?? null,
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
      hand: s.local.hand,
      level: live.level,
      hasAudio: s.local.hasAudio,
      hasVideo: s.local.hasVideo,
      error: s.local.error,
      selected: { ...s.local.selected },
      devices: {
        audioinput: s.local.devices.audioinput.map((d) => ({ ...d })),
        videoinput: s.local.devices.videoinput.map((d) => ({ ...d })),
        audiooutput: s.local.devices.audiooutput.map((d) => ({ ...d })),
      },
      audioTrack: live.audioTrack,
      videoTrack: live.videoTrack,
    },
    failure: s.failure ? { ...s.failure } : null,
    mediaProblem: s.mediaProblem ? { ...s.mediaProblem } : null,
  };
}

/** A track as plain data (for tests): which device it comes from and whether it still runs. */
export function trackInfo(track) {
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
