// AudioWorklet processor: microphone blocks (the AudioContext's rate, usually 48 kHz) ->
// mono PCM16 chunks at the session's rate (24 kHz by default), posted to the page.
// Resampling is linear interpolation with the fractional read position carried across
// blocks, after a one-pole low-pass when downsampling (enough for speech into a 16 kHz encoder).
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.outRate = o.targetRate || 24000;
    this.step = sampleRate / this.outRate;          // input samples per output sample
    this.chunk = Math.round(this.outRate * (o.chunkMs || 40) / 1000);
    this.pos = 0;                                   // read position, relative to this.prev
    this.prev = 0;                                  // last sample of the previous block
    this.lp = 0;                                    // low-pass state
    this.alpha = this.step > 1 ? Math.min(1, 2 * Math.PI * (0.45 * this.outRate) / sampleRate) : 1;
    this.buf = new Int16Array(this.chunk);
    this.fill = 0;
    this.peak = 0;
    this.port.onmessage = (e) => { if (e.data === "flush") this.flush(); };
  }

  flush() {
    if (this.fill === 0) return;
    const out = this.buf.slice(0, this.fill);
    this.port.postMessage({ pcm: out.buffer, peak: this.peak }, [out.buffer]);
    this.fill = 0;
    this.peak = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    const n = input[0].length;
    const x = new Float32Array(n + 1);               // x[0] = previous block's last sample
    x[0] = this.prev;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < input.length; c++) s += input[c][i];
      this.lp += this.alpha * (s / input.length - this.lp);
      x[i + 1] = this.lp;
    }
    while (this.pos <= n - 1e-9) {
      const i = Math.floor(this.pos);
      const f = this.pos - i;
      const v = x[i] + (x[i + 1] - x[i]) * f;
      const a = Math.abs(v);
      if (a > this.peak) this.peak = a;
      this.buf[this.fill++] = Math.max(-32768, Math.min(32767, Math.round(v * 32767)));
      if (this.fill === this.chunk) this.flush();
      this.pos += this.step;
    }
    this.pos -= n;
    this.prev = x[n];
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
