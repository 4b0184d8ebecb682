/* Agent Stream: the audio of "Talk to this agent", on the browser's audio thread.
   "talk-capture": the microphone at the context's rate -> 16 kHz 16-bit PCM, posted in
   20 ms frames (640 bytes) with the level; silence while muted.
   "talk-playback": the agent's 16 kHz PCM, resampled to the context's rate and played in
   order; a mark queued behind audio is posted back once playback reaches it; "clear"
   empties the queue at once (barge-in). */
"use strict";

var WIRE_RATE = 16000;
var FRAME_SAMPLES = 320; // 20 ms at 16 kHz

class TalkCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / WIRE_RATE; // input samples per output sample (3 at 48 kHz)
    this.sum = 0;
    this.count = 0;
    this.due = this.step;
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.muted = false;
    this.peak = 0;
    var self = this;
    this.port.onmessage = function (event) { self.muted = !!event.data.muted; };
  }

  process(inputs) {
    var input = inputs[0] && inputs[0][0];
    if (!input) return true;
    for (var i = 0; i < input.length; i++) {
      var x = this.muted ? 0 : input[i];
      if (Math.abs(x) > this.peak) this.peak = Math.abs(x);
      // average the input samples that fall into each output sample (a box low-pass)
      this.sum += x;
      this.count += 1;
      this.due -= 1;
      if (this.due <= 0) {
        this.due += this.step;
        var y = Math.max(-1, Math.min(1, this.sum / this.count));
        this.sum = 0;
        this.count = 0;
        this.frame[this.filled++] = y < 0 ? y * 0x8000 : y * 0x7fff;
        if (this.filled === FRAME_SAMPLES) this.send();
      }
    }
    return true;
  }

  send() {
    var pcm = this.frame.buffer; // Int16Array's bytes are little-endian on every browser's CPU
    this.port.postMessage({ pcm: pcm, level: this.peak }, [pcm]);
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
    this.peak = 0;
  }
}

class TalkPlayback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = WIRE_RATE / sampleRate; // wire samples per output sample
    this.queue = []; // Float32Array chunks at 16 kHz, and {mark: name} in between
    this.at = 0; // read position in the head chunk, in wire samples
    var self = this;
    this.port.onmessage = function (event) {
      var message = event.data;
      if (message.clear) {
        self.queue = [];
        self.at = 0;
      } else if (message.mark !== undefined) {
        self.queue.push({ mark: message.mark });
      } else if (message.pcm) {
        var pcm = new Int16Array(message.pcm);
        var samples = new Float32Array(pcm.length);
        for (var i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
        self.queue.push(samples);
      }
    };
  }

  process(inputs, outputs) {
    var out = outputs[0][0];
    for (var i = 0; i < out.length; i++) {
      out[i] = 0;
      while (this.queue.length) {
        var head = this.queue[0];
        if (head.mark !== undefined) { // everything before it has played
          this.port.postMessage({ mark: head.mark });
          this.queue.shift();
          continue;
        }
        var n = Math.floor(this.at);
        if (n >= head.length) {
          this.at -= head.length;
          this.queue.shift();
          continue;
        }
        var next = n + 1 < head.length ? head[n + 1] : head[n];
        out[i] = head[n] + (next - head[n]) * (this.at - n); // linear interpolation
        this.at += this.step;
        break;
      }
    }
    for (var c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor("talk-capture", TalkCapture);
registerProcessor("talk-playback", TalkPlayback);
