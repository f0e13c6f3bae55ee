// The live client: microphone -> input_audio_buffer.append, response audio -> gapless playback,
// transcript and think chain as they arrive, barge-in, stop, per-turn latency. OpenAI Realtime
// API (GA) events over one WebSocket; no dependencies.
"use strict";

const RATE = 24000;              // audio/pcm both ways (the only rate the GA types allow)
const LEAD_S = 0.05;             // first buffer of a stream starts this far ahead of "now"
const $ = (id) => document.getElementById(id);

// Counters the browser test reads (and handy in the console).
const stats = window.osum = {
  state: "disconnected", sessionId: null, events: {}, errors: [],
  samplesSent: 0, samplesScheduled: 0, audioDeltas: 0, droppedDeltas: 0, underruns: 0, playing: 0,
  textDeltas: 0, thinkDeltas: 0, responsesDone: 0, bargeIns: 0,
  lastLatencyMs: null, latencies: [], lastAnswer: "", lastThink: "", lastMetadata: null, metadata: [], closeCode: null,
};

let ws = null, ctx = null, mic = null, capture = null;
let eventSeq = 0;
let textOnly = false;            // a text-answer task: the latency shown is to the first text delta
const play = { nextTime: 0, sources: new Set(), itemId: null, itemStart: null, itemSamples: 0 };
const turn = { t0: null, waitingAudio: false };
const responses = new Map();     // response_id -> {answer, think, status} elements
const muted = new Set();         // responses stopped or barged into: their late audio deltas are dropped
let activeResponse = null;
let userTurn = null;

function setState(s) { stats.state = s; $("state").textContent = s; }

function log(text, cls) {
  const line = document.createElement("div");
  line.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (cls) line.className = cls;
  $("log").appendChild(line);
  $("log").scrollTop = $("log").scrollHeight;
}

function send(event) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  event.event_id = `evt_client_${++eventSeq}`;
  ws.send(JSON.stringify(event));
}

// ---------------------------------------------------------------- audio helpers

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function pcm16ToFloat(b64) {
  const raw = atob(b64);
  const n = raw.length >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    out[i] = v / 32768;
  }
  return out;
}

function schedule(samples, itemId) {
  if (!ctx || samples.length === 0) return;
  const buf = ctx.createBuffer(1, samples.length, RATE);
  buf.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  const now = ctx.currentTime;
  if (play.nextTime < now) {           // nothing queued (first delta) or the stream ran dry
    if (play.sources.size > 0 || play.itemId === itemId) stats.underruns++;
    play.nextTime = now + LEAD_S;
  }
  if (play.itemId !== itemId) { play.itemId = itemId; play.itemStart = play.nextTime; play.itemSamples = 0; }
  src.start(play.nextTime);
  play.nextTime += buf.duration;
  play.itemSamples += samples.length;
  play.sources.add(src);
  src.onended = () => { play.sources.delete(src); stats.playing = play.sources.size; };
  stats.playing = play.sources.size;
  stats.samplesScheduled += samples.length;
}

// Stops every scheduled buffer now; returns how many ms of the current item were heard.
function stopPlayback() {
  const heardMs = ctx && play.itemStart !== null
    ? Math.max(0, Math.min(play.itemSamples / RATE, ctx.currentTime - play.itemStart)) * 1000 : 0;
  const wasPlaying = play.sources.size > 0;
  for (const src of play.sources) { try { src.stop(); } catch (e) { /* already stopped */ } }
  play.sources.clear();
  stats.playing = 0;
  play.nextTime = 0;
  return { wasPlaying, heardMs: Math.round(heardMs), itemId: play.itemId };
}

async function startMic() {
  await ctx.audioWorklet.addModule("static/capture-worklet.js");
  mic = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
  const source = ctx.createMediaStreamSource(mic);
  capture = new AudioWorkletNode(ctx, "pcm-capture", { processorOptions: { targetRate: RATE, chunkMs: 40 } });
  capture.port.onmessage = (e) => {
    $("level").firstElementChild.style.width = `${Math.min(100, e.data.peak * 140)}%`;
    stats.samplesSent += e.data.pcm.byteLength / 2;
    send({ type: "input_audio_buffer.append", audio: toBase64(e.data.pcm) });
  };
  source.connect(capture);          // the processor outputs nothing; it needs no destination
  if (ctx.state === "suspended") await ctx.resume();
}

// ---------------------------------------------------------------- conversation view

function addTurn(kind, who) {
  const el = document.createElement("div");
  el.className = `turn ${kind}`;
  el.innerHTML = '<div class="who"></div><div class="think"></div><div class="answer"></div><div class="status"></div>';
  el.querySelector(".who").textContent = who;
  $("conversation").appendChild(el);
  $("conversation").scrollTop = $("conversation").scrollHeight;
  return { el, think: el.querySelector(".think"), answer: el.querySelector(".answer"), status: el.querySelector(".status") };
}

function responseView(id) {
  if (!responses.has(id)) responses.set(id, addTurn("assistant", "assistant"));
  return responses.get(id);
}

function startTurnClock() {
  if (turn.t0 === null) { turn.t0 = performance.now(); turn.waitingAudio = true; }
}

function showLatency(ms) {
  stats.lastLatencyMs = ms;
  stats.latencies.push(ms);
  $("latency").textContent = `${ms.toFixed(0)} ms`;
  $("latencies").textContent = "per turn: " + stats.latencies.map((v) => `${v.toFixed(0)} ms`).join(" · ");
}

// ---------------------------------------------------------------- server events

const handlers = {
  "session.created"(e) {
    stats.sessionId = e.session.id || null;
    $("session_id").textContent = stats.sessionId || "?";
    const vad = $("vad").checked;
    const session = { type: "realtime", audio: {
      input: { format: { type: "audio/pcm", rate: RATE },
               turn_detection: vad ? { type: "server_vad", create_response: true, interrupt_response: true } : null },
      output: { format: { type: "audio/pcm", rate: RATE } } } };
    if ($("task").value) session.osum = { task: $("task").value };   // this server's own session fields
    textOnly = $("task").value.startsWith("chat");
    if (textOnly) session.output_modalities = ["text"];
    send({ type: "session.update", session });
  },
  async "session.updated"() {
    if (mic) return;
    try {
      await startMic();
      setState("listening");
      $("commit").disabled = $("vad").checked;
    } catch (err) {
      log(`microphone: ${err}`, "error");
      stats.errors.push({ code: "microphone", message: String(err) });
      setState("no microphone");
    }
  },
  "input_audio_buffer.speech_started"() {
    setState("hearing you");
    if (activeResponse) muted.add(activeResponse);
    const cut = stopPlayback();                       // barge-in: silence at once
    if (cut.wasPlaying) {
      stats.bargeIns++;
      // tell the server how much of the answer was actually heard
      if (cut.itemId) send({ type: "conversation.item.truncate", item_id: cut.itemId, content_index: 0, audio_end_ms: cut.heardMs });
    }
    turn.t0 = null;
    turn.waitingAudio = false;
  },
  "input_audio_buffer.speech_stopped"() { startTurnClock(); setState("thinking"); },
  "input_audio_buffer.committed"() {
    startTurnClock();
    userTurn = addTurn("user", "you");
    userTurn.answer.textContent = "(speech)";
  },
  "conversation.item.done"(e) {
    const c = (e.item && e.item.role === "user" && e.item.content) || [];
    const said = c.map((p) => p.transcript || p.text || "").join(" ").trim();
    if (said && userTurn) userTurn.answer.textContent = said;
  },
  "response.created"(e) {
    activeResponse = e.response.id;
    responseView(e.response.id).status.textContent = "answering…";
    setState("answering");
  },
  "response.output_audio_transcript.delta"(e) { appendAnswer(e); },
  "response.output_text.delta"(e) { appendAnswer(e); },
  "response.output_audio.delta"(e) {
    stats.audioDeltas++;
    if (muted.has(e.response_id)) { stats.droppedDeltas++; return; }
    if (turn.waitingAudio) { showLatency(performance.now() - turn.t0); turn.waitingAudio = false; }
    schedule(pcm16ToFloat(e.delta), e.item_id);
  },
  "response.done"(e) {
    const r = e.response;
    stats.responsesDone++;
    if (activeResponse === r.id) activeResponse = null;
    const v = responseView(r.id);
    v.status.textContent = r.status + (r.status_details && r.status_details.reason ? ` (${r.status_details.reason})` : "");
    stats.lastMetadata = r.metadata || null;   // the server's per-turn timings and notes
    stats.metadata.push(stats.lastMetadata);
    turn.t0 = null;
    turn.waitingAudio = false;
    setState("listening");
  },
  "error"(e) {
    const err = e.error || {};
    if (err.code === "response_cancel_not_active") {  // our Stop crossed the answer's end: nothing to undo
      log(`note: ${err.message}`);
      return;
    }
    stats.errors.push(err);
    log(`error ${err.code || err.type}: ${err.message}`, "error");
  },
};

function appendAnswer(e) {
  stats.textDeltas++;
  if (textOnly && turn.waitingAudio) { showLatency(performance.now() - turn.t0); turn.waitingAudio = false; }
  const v = responseView(e.response_id);
  v.answer.textContent += e.delta;
  stats.lastAnswer = v.answer.textContent;
}

function appendThink(e) {
  stats.thinkDeltas++;
  const v = responseView(e.response_id);
  v.think.textContent += e.delta;
  stats.lastThink = v.think.textContent;
}

function onMessage(msg) {
  let e;
  try { e = JSON.parse(msg.data); } catch (err) { log(`bad server message: ${err}`, "error"); return; }
  stats.events[e.type] = (stats.events[e.type] || 0) + 1;
  const h = handlers[e.type];
  if (h) h(e);
  // the server's think-chain extension: its own event type, a delta with the response id
  else if (/think/.test(e.type) && typeof e.delta === "string") appendThink(e);
  if (!/\.delta$/.test(e.type) && e.type !== "input_audio_buffer.append") log(e.type);
}

// ---------------------------------------------------------------- buttons

function connect() {
  // created in the click itself: browsers start an AudioContext only after a user gesture
  ctx = new AudioContext();
  const key = $("api_key").value.trim();
  const protocols = ["realtime"];
  if (key) protocols.push(`openai-insecure-api-key.${key}`);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const base = location.pathname.replace(/[^/]*$/, "");
  ws = new WebSocket(`${scheme}://${location.host}${base}v1/realtime?model=${encodeURIComponent($("model").value)}`, protocols);
  setState("connecting");
  ws.onmessage = onMessage;
  ws.onclose = (e) => {
    stats.closeCode = e.code;
    log(`connection closed (${e.code}${e.reason ? ": " + e.reason : ""})`, e.code === 1000 ? "" : "error");
    hangup(false);
  };
  $("start").disabled = true;
  $("stop").disabled = $("hangup").disabled = false;
}

function hangup(close = true) {
  stopPlayback();
  if (close && ws) ws.close(1000);
  ws = null;
  if (mic) mic.getTracks().forEach((t) => t.stop());
  if (ctx) ctx.close();
  mic = ctx = capture = null;
  setState("disconnected");
  $("start").disabled = false;
  $("stop").disabled = $("hangup").disabled = $("commit").disabled = true;
}

$("start").onclick = connect;
$("hangup").onclick = () => hangup(true);
$("stop").onclick = () => {
  if (activeResponse) {
    muted.add(activeResponse);
    send({ type: "response.cancel", response_id: activeResponse });
  }
  stopPlayback();
  turn.waitingAudio = false;
};
$("commit").onclick = () => {
  if (capture) capture.port.postMessage("flush");
  setTimeout(() => { send({ type: "input_audio_buffer.commit" }); send({ type: "response.create" }); }, 20);
};
