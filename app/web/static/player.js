// Playing audio while it still arrives.
//
//   pcm, wav  Web Audio: int16 little-endian mono samples, scheduled back to back as they come (the rate from
//             the X-Sample-Rate header, or from the WAV header)
//   mp3, aac  MediaSource, when the browser takes that type: the bytes go to an <audio> element as they come
//   others    after the download: decodeAudioData, then Web Audio
//
// Every player counts `decodedSeconds` itself (samples it scheduled / their rate, the MediaSource's buffered
// time, or the decoded file's duration) and reports changes through `onChange`.

const MEDIA_SOURCE_TYPES = { mp3: "audio/mpeg", aac: "audio/aac" };
const LEAD_SECONDS = 0.05; // how far ahead of "now" a stream starts (and restarts after running dry)

let context = null;

// The page's one AudioContext. Call it from a click handler: browsers start audio only after a gesture.
export function audioContext() {
  if (!context) context = new (window.AudioContext || window.webkitAudioContext)();
  if (context.state === "suspended") context.resume().catch(() => {});
  return context;
}

function mediaSourceType(format) {
  const type = MEDIA_SOURCE_TYPES[format];
  const MS = window.MediaSource || window.ManagedMediaSource;
  return type && MS && MS.isTypeSupported(type) ? type : "";
}

// How `format` plays here: "web audio", "media source" (both while streaming) or "after download".
export function playbackOf(format) {
  if (format === "pcm" || format === "wav") return "web audio";
  return mediaSourceType(format) ? "media source" : "after download";
}

// Float32 buffers played one after another on the shared AudioContext.
class Scheduled {
  constructor(onChange) {
    this.onChange = onChange;
    this.ctx = audioContext();
    this.sources = new Set();
    this.next = 0;
    this.decodedSeconds = 0;
    this.ended = false;
  }

  play(samples, rate) {
    if (!samples.length) return;
    const buffer = this.ctx.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.next < now + 0.01) this.next = now + LEAD_SECONDS; // first buffer, or the stream ran dry
    source.start(this.next);
    this.next += buffer.duration;
    this.decodedSeconds += samples.length / rate;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      if (!this.sources.size && this.ended) this.onChange({ playing: false });
    };
    this.onChange({ playing: true, decodedSeconds: this.decodedSeconds });
  }

  async end() {
    this.ended = true;
    if (!this.sources.size) this.onChange({ playing: false });
  }

  stop() {
    this.ended = true;
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.onChange({ playing: false });
  }
}

// Raw int16 little-endian mono samples; a chunk may end in the middle of a sample.
class PcmStream extends Scheduled {
  begin(response) {
    this.rate = Number(response.headers.get("X-Sample-Rate")) || 24000;
    this.carry = null;
  }

  push(bytes) {
    if (this.carry) {
      const joined = new Uint8Array(this.carry.length + bytes.length);
      joined.set(this.carry);
      joined.set(bytes, this.carry.length);
      bytes = joined;
      this.carry = null;
    }
    const whole = bytes.length - (bytes.length % 2);
    if (whole < bytes.length) this.carry = bytes.slice(whole);
    const view = new DataView(bytes.buffer, bytes.byteOffset, whole);
    const samples = new Float32Array(whole / 2);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
    this.play(samples, this.rate);
  }
}

// A streamed WAV: its header (sizes "unknown") and then the same samples as pcm.
class WavStream extends PcmStream {
  begin(response) {
    super.begin(response);
    this.header = new Uint8Array(0);
  }

  push(bytes) {
    if (!this.header) return super.push(bytes);
    const joined = new Uint8Array(this.header.length + bytes.length);
    joined.set(this.header);
    joined.set(bytes, this.header.length);
    const start = this.dataStart(joined);
    if (start < 0) {
      this.header = joined; // the header is not all here yet
      return;
    }
    this.header = null;
    super.push(joined.subarray(start));
  }

  // Where the samples begin (after the "data" chunk's header), or -1; reads the rate from "fmt ".
  dataStart(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
    if (bytes.length < 12) return -1;
    if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("the answer is not a WAV file");
    let at = 12;
    while (at + 8 <= bytes.length) {
      const size = view.getUint32(at + 4, true);
      if (tag(at) === "data") return at + 8;
      if (tag(at) === "fmt ") {
        if (at + 24 > bytes.length) return -1;
        const channels = view.getUint16(at + 10, true);
        const bits = view.getUint16(at + 22, true);
        if (channels !== 1 || bits !== 16) throw new Error(`a ${bits}-bit, ${channels}-channel WAV is not streamed`);
        this.rate = view.getUint32(at + 12, true);
      }
      at += 8 + size + (size % 2);
    }
    return -1;
  }
}

// Bytes appended to a MediaSource that an <audio> element plays.
class MediaSourceStream {
  constructor(onChange, audio, type) {
    this.onChange = onChange;
    this.audio = audio;
    this.queue = [];
    this.ended = false;
    this.decodedSeconds = 0;
    const MS = window.MediaSource || window.ManagedMediaSource;
    this.source = new MS();
    audio.disableRemotePlayback = true; // ManagedMediaSource (Safari) plays only with this set
    audio.src = URL.createObjectURL(this.source);
    this.opened = new Promise((resolve) => {
      this.source.addEventListener("sourceopen", () => {
        URL.revokeObjectURL(audio.src);
        this.buffer = this.source.addSourceBuffer(type);
        this.buffer.addEventListener("updateend", () => this.pump());
        resolve();
      });
    });
    audio.onplaying = () => onChange({ playing: true });
    audio.onended = () => onChange({ playing: false });
    audio.play().catch(() => {}); // inside the click: it starts as soon as there is data
  }

  begin() {}

  push(bytes) {
    this.queue.push(bytes);
    this.opened.then(() => this.pump());
  }

  pump() {
    if (!this.buffer || this.buffer.updating) return;
    const ranges = this.buffer.buffered;
    if (ranges.length) {
      this.decodedSeconds = ranges.end(ranges.length - 1);
      this.onChange({ decodedSeconds: this.decodedSeconds });
    }
    try {
      if (this.queue.length) {
        this.buffer.appendBuffer(this.queue.shift());
      } else if (this.ended && this.source.readyState === "open") {
        this.source.endOfStream();
        this.settle();
      }
    } catch (err) {
      this.settle(new Error(`the browser cannot play this audio as it arrives (${err.message})`));
    }
  }

  end() {
    this.ended = true;
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.settle = (error) => {
        this.settle = () => {};
        if (error) reject(error);
        else resolve();
      };
      this.audio.onerror = () => this.settle(new Error("the browser could not decode the audio"));
      this.opened.then(() => this.pump());
    });
  }

  settle(error) {
    if (error) this.error = error; // before end() is called: it rejects with this
  }

  stop() {
    this.queue = [];
    this.audio.pause();
    this.settle();
    this.onChange({ playing: false });
  }
}

// Formats the browser cannot stream: decoded and played once the whole file is here.
class Downloaded extends Scheduled {
  begin() {}

  push() {}

  async end(blob) {
    const decoded = await this.ctx.decodeAudioData(await blob.arrayBuffer());
    const samples = decoded.getChannelData(0);
    this.play(samples, decoded.sampleRate);
    return super.end();
  }
}

// A player for one answer in `format`; `audio` is the <audio> element MediaSource plays through.
export function makePlayer(format, audio, onChange) {
  if (format === "pcm") return new PcmStream(onChange);
  if (format === "wav") return new WavStream(onChange);
  const type = mediaSourceType(format);
  return type ? new MediaSourceStream(onChange, audio, type) : new Downloaded(onChange);
}
