// WebRTC helpers: offers with gathered candidates (the server does not trickle) and stats.

export async function makeOffer(pc, timeoutMs = 3000) {
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }
  return { type: "offer", sdp: pc.localDescription.sdp };
}

// Receiver-side numbers people ask about: fps, size, codec, RTT, jitter-buffer delay.
export async function readStats(pc, previous) {
  const report = await pc.getStats();
  const out = { fps: null, width: null, height: null, codec: null, rttMs: null,
                jitterBufferMs: null, framesDecoded: 0, audioJitterBufferMs: null };
  const codecs = {};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.fps = s.framesPerSecond ?? null;
      out.width = s.frameWidth ?? null;
      out.height = s.frameHeight ?? null;
      out.codec = codecs[s.codecId] || null;
      out.framesDecoded = s.framesDecoded || 0;
      const emitted = s.jitterBufferEmittedCount || 0;
      const prevEmitted = previous ? previous.jbEmitted : 0;
      const prevDelay = previous ? previous.jbDelay : 0;
      if (emitted > prevEmitted) {
        out.jitterBufferMs = (1000 * ((s.jitterBufferDelay || 0) - prevDelay)) /
          (emitted - prevEmitted);
      }
      out.jbEmitted = emitted;
      out.jbDelay = s.jitterBufferDelay || 0;
    }
    if (s.type === "inbound-rtp" && s.kind === "audio" && s.jitterBufferEmittedCount) {
      out.audioJitterBufferMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
    }
    if (s.type === "candidate-pair" && s.state === "succeeded" && s.currentRoundTripTime != null) {
      out.rttMs = 1000 * s.currentRoundTripTime;
    }
  });
  return out;
}

export function formatStats(s, serverLatencyMs) {
  const f = (v, d = 0) => (v == null ? "–" : Number(v).toFixed(d));
  return [
    `fps ${f(s.fps, 1)}   ${s.width || "–"}×${s.height || "–"}   ${s.codec || ""}`,
    `RTT ${f(s.rttMs)} ms   jitter buffer ${f(s.jitterBufferMs)} ms`,
    `server latency ${f(serverLatencyMs)} ms`,
  ].join("\n");
}

// Decode any audio file the browser can play into 16 kHz mono PCM s16le.
export async function fileToPcm16(file) {
  const data = await file.arrayBuffer();
  const ctx = new AudioContext();
  const decoded = await ctx.decodeAudioData(data);
  await ctx.close();
  const frames = Math.ceil(decoded.duration * 16000);
  const offline = new OfflineAudioContext(1, frames, 16000);
  const src = offline.createBufferSource();
  src.buffer = decoded;
  src.connect(offline.destination);
  src.start();
  const rendered = await offline.startRendering();
  const f32 = rendered.getChannelData(0);
  const pcm = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) {
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f32[i] * 32767)));
  }
  return pcm;
}
