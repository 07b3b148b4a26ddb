// Audio levels measured in the page (Web Audio AnalyserNode): the level meter on one's own tile
// and on the pre-join screen, and who is speaking in peer-to-peer rooms, where no server measures
// it. The decision (a level above a threshold, held briefly so the indicator does not flicker
// between words) is `SpeakingDetector`, pure and unit-tested in node.

/** RMS of a speaking voice after the browser's gain control is well above this; room noise below. */
export const SPEAKING_LEVEL = 0.04;
/** Keep "speaking" this long after the last loud sample: the pauses between words. */
export const HOLD_MS = 700;

export class SpeakingDetector {
  constructor({ threshold = SPEAKING_LEVEL, holdMs = HOLD_MS } = {}) {
    this.threshold = threshold;
    this.holdMs = holdMs;
    this.lastLoud = new Map(); // key -> time of the last sample above the threshold
  }

  /** levels: Map key -> RMS (0..1) now; returns the sorted keys speaking at `now`. */
  update(levels, now) {
    for (const [key, level] of levels) if (level >= this.threshold) this.lastLoud.set(key, now);
    for (const key of [...this.lastLoud.keys()]) if (!levels.has(key)) this.lastLoud.delete(key);
    return [...this.lastLoud]
      .filter(([, at]) => now - at <= this.holdMs)
      .map(([key]) => key)
      .sort();
  }
}

/** The root mean square of time-domain samples (bytes centred on 128, as getByteTimeDomainData). */
export function rms(samples) {
  let sum = 0;
  for (const b of samples) {
    const x = (b - 128) / 128;
    sum += x * x;
  }
  return samples.length ? Math.sqrt(sum / samples.length) : 0;
}

/** One AudioContext, one AnalyserNode per watched stream's audio track. */
export class AudioLevels {
  constructor() {
    this.context = null;
    this.watched = new Map(); // key -> {trackId, source, analyser, buffer}
  }

  /** Measure `stream`'s audio from now on (or stop, for a stream without audio). */
  watch(key, stream) {
    const track = stream ? stream.getAudioTracks()[0] : null;
    const current = this.watched.get(key);
    if (current && track && current.trackId === track.id) return;
    this.unwatch(key);
    if (!track || !window.AudioContext) return;
    if (!this.context) this.context = new AudioContext();
    // A context made before any click starts suspended; the first click (join, unmute) resumes it.
    if (this.context.state === 'suspended') this.context.resume().catch(() => {});
    const source = this.context.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.context.createAnalyser();
    analyser.fftSize = 2048; // ~43 ms at 48 kHz: a syllable, not a single period
    source.connect(analyser); // not to the destination: measuring only, nothing is played twice
    this.watched.set(key, { trackId: track.id, source, analyser, buffer: new Uint8Array(analyser.fftSize) });
  }

  unwatch(key) {
    const w = this.watched.get(key);
    if (!w) return;
    w.source.disconnect();
    this.watched.delete(key);
  }

  /** Keep only these keys. */
  retain(keys) {
    for (const key of [...this.watched.keys()]) if (!keys.has(key)) this.unwatch(key);
  }

  resume() {
    if (this.context && this.context.state === 'suspended') this.context.resume().catch(() => {});
  }

  /** key -> RMS level now (0..1). */
  levels() {
    const out = new Map();
    for (const [key, w] of this.watched) {
      w.analyser.getByteTimeDomainData(w.buffer);
      out.set(key, rms(w.buffer));
    }
    return out;
  }
}
