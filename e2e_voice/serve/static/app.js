// e2e-voice browser client: microphone -> Opus (WebCodecs) -> Ogg -> websocket; and back to the speakers.
"use strict";

const RATE = 24000;
const KIND = { HANDSHAKE: 0, AUDIO: 1, TEXT: 2, CONTROL: 3, METADATA: 4, ERROR: 5, PING: 6 };
const $ = (id) => document.getElementById(id);

// Exposed for tests and curious users (window.e2eStats in the console).
window.e2eStats = { handshake: false, samplesSent: 0, samplesReceived: 0, texts: 0, errors: [], rttMs: null };

let ws = null, ctx = null, stream = null, encoder = null, decoder = null, muxer = null, demuxer = null;
let playHead = 0, pingSent = 0, pingTimer = null, uiTimer = null, packetsSeen = 0;

function setStatus(s) { $("status").textContent = s; }
function showError(msg) { window.e2eStats.errors.push(msg); $("errors").textContent = msg; }

function send(kind, payload) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const msg = new Uint8Array(1 + (payload ? payload.length : 0));
  msg[0] = kind;
  if (payload) msg.set(payload, 1);
  ws.send(msg);
}

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const token = new URLSearchParams(location.search).get("token");
  return `${proto}://${location.host}/api/chat` + (token ? `?token=${encodeURIComponent(token)}` : "");
}

function drawLevel(samples) {
  const c = $("level"), g = c.getContext("2d");
  let peak = 0;
  for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = "#1f6feb";
  g.fillRect(0, 0, Math.min(1, peak * 3) * c.width, c.height);
}

function playPcm(audioData) {
  const n = audioData.numberOfFrames;
  const pcm = new Float32Array(n);
  audioData.copyTo(pcm, { planeIndex: 0, format: "f32-planar" });
  const buf = ctx.createBuffer(1, n, audioData.sampleRate);
  buf.copyToChannel(pcm, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  playHead = Math.max(playHead, ctx.currentTime + 0.02);
  src.start(playHead);
  playHead += buf.duration;
  window.e2eStats.samplesReceived += Math.round(n * RATE / audioData.sampleRate);
  audioData.close();
}

function onServerAudio(bytes) {
  let packets;
  try { packets = demuxer.push(bytes); } catch (e) { showError(`bad audio from server: ${e.message}`); return; }
  for (const p of packets) {
    packetsSeen += 1;
    if (packetsSeen <= 2) continue; // OpusHead, OpusTags
    decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: 0, data: p }));
  }
}

function onMessage(ev) {
  const data = new Uint8Array(ev.data);
  if (!data.length) return;
  const kind = data[0], payload = data.subarray(1);
  if (kind === KIND.HANDSHAKE) {
    window.e2eStats.handshake = true;
    setStatus("connected: speak whenever you like");
    startMicrophone().catch((e) => showError(`microphone: ${e.message}`));
  } else if (kind === KIND.AUDIO) {
    onServerAudio(payload);
  } else if (kind === KIND.TEXT) {
    window.e2eStats.texts += 1;
    $("transcript").textContent += new TextDecoder().decode(payload);
  } else if (kind === KIND.ERROR) {
    showError(`server: ${new TextDecoder().decode(payload)}`);
  } else if (kind === KIND.PING) {
    window.e2eStats.rttMs = performance.now() - pingSent;
  }
}

async function startMicrophone() {
  stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "capture");
  muxer = new OggOpusMuxer(RATE);
  let headersSent = false;
  encoder = new AudioEncoder({
    output: (chunk) => {
      if (!headersSent) {
        for (const h of muxer.headers()) send(KIND.AUDIO, h);
        headersSent = true;
      }
      const data = new Uint8Array(chunk.byteLength);
      chunk.copyTo(data);
      send(KIND.AUDIO, muxer.packet(data, chunk.duration || 20000));
    },
    error: (e) => showError(`encoder: ${e.message}`),
  });
  encoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1, bitrate: 32000 });
  let ts = 0;
  node.port.onmessage = (ev) => {
    const samples = ev.data;
    drawLevel(samples);
    encoder.encode(new AudioData({
      format: "f32-planar", sampleRate: RATE, numberOfFrames: samples.length, numberOfChannels: 1,
      timestamp: ts, data: samples,
    }));
    ts += Math.round(samples.length * 1e6 / RATE);
    window.e2eStats.samplesSent += samples.length;
  };
  source.connect(node);
}

async function start() {
  if (!("AudioEncoder" in window)) { showError("this browser has no WebCodecs AudioEncoder (use Chromium/Chrome)"); return; }
  $("start").disabled = true; $("stop").disabled = false; $("errors").textContent = "";
  ctx = new AudioContext({ sampleRate: RATE });
  await ctx.resume();
  playHead = 0; packetsSeen = 0;
  demuxer = new OggDemuxer();
  decoder = new AudioDecoder({ output: playPcm, error: (e) => showError(`decoder: ${e.message}`) });
  decoder.configure({ codec: "opus", sampleRate: RATE, numberOfChannels: 1 });
  ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  setStatus("connecting…");
  ws.onmessage = onMessage;
  ws.onclose = (ev) => { setStatus(`closed (${ev.code})`); stop(); };
  ws.onerror = () => showError("websocket error (is the server running?)");
  pingTimer = setInterval(() => { pingSent = performance.now(); send(KIND.PING); }, 1000);
  uiTimer = setInterval(() => {
    const s = window.e2eStats;
    $("rtt").textContent = s.rttMs === null ? "–" : s.rttMs.toFixed(0);
    $("buffered").textContent = ctx ? Math.max(0, (playHead - ctx.currentTime) * 1000).toFixed(0) : "–";
    $("sent").textContent = (s.samplesSent / RATE).toFixed(1);
    $("received").textContent = (s.samplesReceived / RATE).toFixed(1);
  }, 250);
}

function stop() {
  $("start").disabled = false; $("stop").disabled = true;
  clearInterval(pingTimer); clearInterval(uiTimer);
  if (stream) stream.getTracks().forEach((t) => t.stop());
  if (ws && ws.readyState === WebSocket.OPEN) ws.close();
  if (encoder && encoder.state !== "closed") encoder.close();
  if (decoder && decoder.state !== "closed") decoder.close();
  stream = null; encoder = null; decoder = null;
}

$("start").onclick = start;
$("stop").onclick = stop;
