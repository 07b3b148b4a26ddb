// Local media: camera and microphone (with device choice), screen sharing, and the stream the
// preview shows. It tells its owner about every track change through `onTracks`, so the peer
// connections can swap tracks without renegotiating.

/** Mesh-friendly: every participant uploads one copy per peer. */
export const VIDEO_CONSTRAINTS = {
  width: { ideal: 640 },
  height: { ideal: 360 },
  frameRate: { ideal: 24, max: 30 },
};
/** Group rooms: one upload to the SFU, which forwards smaller simulcast layers to whoever needs them. */
export const GROUP_VIDEO_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30, max: 30 },
};
const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** A getUserMedia failure as one of our error names. */
export function classifyMediaError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
    case 'PermissionDeniedError':
      return 'denied';
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return 'not-found';
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return 'in-use';
    default:
      return 'unsupported';
  }
}

export class LocalMedia {
  /**
   * onTracks({audio, video}) after any track change; onDevices(devices, selected);
   * onScreenEnded(); onFallback(kind) when a device in use went away and the default replaced it.
   */
  constructor({ onTracks, onDevices, onScreenEnded, onFallback = () => {} }) {
    this.onTracks = onTracks;
    this.onDevices = onDevices;
    this.onScreenEnded = onScreenEnded;
    this.onFallback = onFallback;
    this.lost = { audioinput: false, videoinput: false }; // the track ended without being asked to
    this.deviceWork = Promise.resolve(); // device changes run one after another
    this.videoConstraints = VIDEO_CONSTRAINTS;
    this.audioTrack = null;
    this.cameraTrack = null;
    this.screenTrack = null;
    this.audioEnabled = true;
    this.selected = { audioinput: '', videoinput: '', audiooutput: '' };
    this.stream = new MediaStream(); // what the self tile and preview show
    this.error = null;
    if (navigator.mediaDevices && 'ondevicechange' in navigator.mediaDevices) {
      navigator.mediaDevices.addEventListener('devicechange', () => {
        this.deviceWork = this.deviceWork.then(() => this.handleDeviceChange()).catch((err) => console.warn(err));
      });
    }
  }

  get supported() {
    return !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  }

  /** The video track peers should get: the screen while sharing, else the camera (or none). */
  get outgoingVideo() {
    return this.screenTrack || this.cameraTrack;
  }

  /**
   * Opens the microphone and/or camera. A refused or missing camera does not cost the microphone
   * (and vice versa): each is tried alone when both together fail. Returns the error name or null.
   */
  async open({ audio = true, video = true } = {}) {
    this.error = null;
    if (!this.supported) {
      this.error = 'unsupported';
      return this.error;
    }
    const want = {
      audio: audio ? this.constraint('audioinput', AUDIO_CONSTRAINTS) : false,
      video: video ? this.constraint('videoinput', this.videoConstraints) : false,
    };
    if (!want.audio && !want.video) return null;
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia(want);
    } catch (err) {
      this.error = classifyMediaError(err);
      if (want.audio && want.video) {
        // One of the two may still work: a laptop with a broken camera can still talk.
        const parts = await Promise.allSettled([
          navigator.mediaDevices.getUserMedia({ audio: want.audio }),
          navigator.mediaDevices.getUserMedia({ video: want.video }),
        ]);
        const tracks = parts.filter((p) => p.status === 'fulfilled').flatMap((p) => p.value.getTracks());
        if (tracks.length) stream = new MediaStream(tracks);
      }
    }
    if (stream) {
      const a = stream.getAudioTracks()[0];
      const v = stream.getVideoTracks()[0];
      if (a) this.setAudioTrack(a);
      if (v) this.setCameraTrack(v);
      if ((want.audio && !a) || (want.video && !v)) this.error = this.error || 'not-found';
      else this.error = null;
    }
    await this.refreshDevices();
    this.emit();
    return this.error;
  }

  constraint(kind, base) {
    const id = this.selected[kind];
    return id ? { ...base, deviceId: { exact: id } } : { ...base };
  }

  setAudioTrack(track) {
    if (this.audioTrack && this.audioTrack !== track) this.audioTrack.stop();
    this.audioTrack = track;
    this.lost.audioinput = false;
    track.enabled = this.audioEnabled; // a new microphone keeps the mute state
    track.addEventListener('ended', () => {
      if (this.audioTrack === track) this.lost.audioinput = true;
    });
    this.selected.audioinput = track.getSettings().deviceId || this.selected.audioinput;
  }

  setCameraTrack(track) {
    if (this.cameraTrack && this.cameraTrack !== track) this.cameraTrack.stop();
    this.cameraTrack = track;
    this.lost.videoinput = false;
    if (track) {
      this.selected.videoinput = track.getSettings().deviceId || this.selected.videoinput;
      track.addEventListener('ended', () => {
        if (this.cameraTrack === track) {
          this.cameraTrack = null; // unplugged: devicechange brings the default camera back
          this.lost.videoinput = true;
          this.emit();
        }
      });
    }
  }

  /** Microphone mute keeps the track (and the device) and sends silence. */
  setAudioEnabled(on) {
    this.audioEnabled = on;
    if (this.audioTrack) this.audioTrack.enabled = on;
    else if (on) return this.open({ audio: true, video: false });
    return Promise.resolve(null);
  }

  /** Capture size from now on, applied to the running camera too (no new track, no renegotiation). */
  async useVideoConstraints(constraints) {
    this.videoConstraints = constraints;
    if (!this.cameraTrack) return;
    try {
      await this.cameraTrack.applyConstraints(constraints);
    } catch (err) {
      console.warn('camera kept its size', err); // an "ideal" size should never be refused
    }
  }

  /** Camera off releases the camera (its light goes off); on opens it again. */
  async setVideoEnabled(on) {
    if (!on) {
      this.lost.videoinput = false;
      if (this.cameraTrack) {
        this.cameraTrack.stop();
        this.cameraTrack = null;
      }
      this.emit();
      return null;
    }
    if (this.cameraTrack) return null;
    return this.open({ audio: false, video: true });
  }

  /**
   * Switch camera or microphone, also mid-call: the new track replaces the old one on every
   * sender (through onTracks → replaceTrack, no renegotiation), the old one is stopped, and the
   * microphone's mute state carries over. A camera that is off only remembers the choice.
   */
  async selectDevice(kind, deviceId) {
    if (kind === 'audiooutput') {
      // Nothing to capture: the view plays remote audio there (setSinkId).
      this.selected.audiooutput = deviceId;
      this.onDevices(this.devices, { ...this.selected });
      return null;
    }
    const previous = this.selected[kind];
    this.selected[kind] = deviceId;
    const audio = kind === 'audioinput';
    if (!(audio ? this.audioTrack : this.cameraTrack)) return null;
    const err = await this.open({ audio, video: !audio });
    if (err) this.selected[kind] = previous; // the old device keeps working
    return err;
  }

  async startScreen() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) throw new Error('unsupported');
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = stream.getVideoTracks()[0];
    track.contentHint = 'detail';
    track.addEventListener('ended', () => {
      if (this.screenTrack === track) {
        this.screenTrack = null;
        this.emit();
        this.onScreenEnded();
      }
    });
    this.screenTrack = track;
    this.emit();
  }

  stopScreen() {
    if (!this.screenTrack) return;
    this.screenTrack.stop();
    this.screenTrack = null;
    this.emit();
  }

  /** Rebuilds the preview stream and tells the owner which tracks to send now. */
  emit() {
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
    if (this.audioTrack) this.stream.addTrack(this.audioTrack);
    if (this.outgoingVideo) this.stream.addTrack(this.outgoingVideo);
    this.onTracks({ audio: this.audioTrack, video: this.outgoingVideo });
  }

  async refreshDevices() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
    const all = await navigator.mediaDevices.enumerateDevices();
    const devices = { audioinput: [], videoinput: [], audiooutput: [] };
    for (const d of all) {
      if (devices[d.kind] && d.deviceId) {
        devices[d.kind].push({ deviceId: d.deviceId, label: d.label || `${d.kind} ${devices[d.kind].length + 1}` });
      }
    }
    this.devices = devices;
    this.onDevices(devices, { ...this.selected });
  }

  /**
   * A device was plugged in or out: list again. If the device in use is gone (or its track
   * ended), switch to the default one the same way as selectDevice and tell the owner.
   */
  async handleDeviceChange() {
    await this.refreshDevices();
    if (!this.devices) return;
    const speakers = this.selected.audiooutput;
    if (speakers && !this.devices.audiooutput.some((d) => d.deviceId === speakers)) {
      this.selected.audiooutput = ''; // unplugged headphones: back to the default output
      this.onDevices(this.devices, { ...this.selected });
    }
    for (const kind of ['audioinput', 'videoinput']) {
      const audio = kind === 'audioinput';
      const id = this.selected[kind];
      const track = audio ? this.audioTrack : this.cameraTrack;
      const gone = !!id && !this.devices[kind].some((d) => d.deviceId === id);
      const ended = (track && track.readyState === 'ended') || this.lost[kind];
      if (!gone && !ended) continue;
      if (gone) this.selected[kind] = '';
      if (!track && !this.lost[kind]) continue; // not in use (camera off): nothing to replace
      const err = await this.open({ audio, video: !audio });
      this.onFallback(kind, err);
    }
  }

  stopAll() {
    for (const t of [this.audioTrack, this.cameraTrack, this.screenTrack]) if (t) t.stop();
    this.audioTrack = this.cameraTrack = this.screenTrack = null;
    this.lost = { audioinput: false, videoinput: false };
    for (const t of this.stream.getTracks()) this.stream.removeTrack(t);
  }
}
