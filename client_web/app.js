// Vivify's browser client: pick a portrait, call with your microphone or present a broadcast.
import * as api from "./api.js";
import { placeFace } from "./place.js";
import { fileToPcm16, formatStats, makeOffer, readStats } from "./rtc.js";

const $ = (id) => document.getElementById(id);
const state = { avatar: "default", session: null, pc: null, ws: null, mic: null,
                statsTimer: null, lastStats: null, mode: null };

function setState(text, bad = false) {
  $("state").textContent = text;
  $("state").classList.toggle("bad", bad);
}

function showAvatarError(text) {
  $("avatar-error").textContent = text;
  $("avatar-error").hidden = !text;
}

// ---------------------------------------------------------------- portraits
async function loadAvatars(select) {
  try {
    const { avatars } = await api.get("/v1/avatars");
    const box = $("avatars");
    box.replaceChildren();
    for (const a of avatars) {
      const b = document.createElement("button");
      b.setAttribute("role", "radio");
      b.setAttribute("aria-checked", String(a.id === (select || state.avatar)));
      b.setAttribute("aria-label", a.id === "default" ? "Default portrait" : `Portrait ${a.id}`);
      b.dataset.id = a.id;
      const img = document.createElement("img");
      img.src = `/v1/avatars/${a.id}/preview.jpg`;
      img.alt = "";
      b.append(img);
      b.addEventListener("click", () => chooseAvatar(a.id));
      box.append(b);
    }
    if (select) chooseAvatar(select);
  } catch (err) {
    showAvatarError(api.describe(err));
  }
}

function chooseAvatar(id) {
  state.avatar = id;
  for (const b of $("avatars").children) b.setAttribute("aria-checked", String(b.dataset.id === id));
}

async function upload(file, points = null) {
  showAvatarError("");
  if (!$("consent").checked) {
    showAvatarError("Please confirm you have the right to use this likeness.");
    return;
  }
  setState("Preparing the portrait…");
  try {
    const rec = await api.uploadAvatar(file, $("consent-by").value.trim(), points);
    await loadAvatars(rec.id);
    setState(rec.warnings && rec.warnings.length ? rec.warnings.join("; ") : "Portrait ready.");
  } catch (err) {
    showAvatarError(api.describe(err));
    setState("The portrait was not accepted.", true);
    // No face found, or the clicked points were not a face: let the user place it by hand.
    if (err.code === "no_face" || err.code === "bad_points") {
      setState("Place the face by hand: click the five points on the portrait.");
      const placed = await placeFace(file);
      if (placed) await upload(file, placed);
    }
  }
}

function setupDrop() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("upload").click(); }
  });
  $("upload").addEventListener("change", () => {
    if ($("upload").files[0]) upload($("upload").files[0]);
    $("upload").value = "";
  });
}

// ---------------------------------------------------------------- sessions
function onEvent(ev) {
  if (ev.type === "playback_started") setState("Speaking…");
  else if (ev.type === "playback_finished") {
    setState(ev.interrupted ? `Interrupted at ${ev.position_ms} ms.` : "Finished speaking.");
  } else if (ev.type === "error") setState(ev.message, ev.code === "session_closed");
}

function watchConnection(pc) {
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected") setState("Connected.");
    if (pc.connectionState === "failed") {
      stop(null);
      setState("The connection failed (ICE could not find a path to the server).", true);
    }
  });
  pc.addEventListener("track", (e) => {
    const video = $("video");
    if (!video.srcObject) video.srcObject = new MediaStream();
    video.srcObject.addTrack(e.track);
    video.play().catch(() => setState("Click the video to start playback."));
  });
}

async function pollStats() {
  const { pc, session } = state;
  if (!pc || !session) return;
  const s = await readStats(pc, state.lastStats);
  state.lastStats = s;
  let serverMs = null;
  try {
    serverMs = (await api.get(`/v1/sessions/${session}`)).media.latency_ms_p50;
  } catch { /* the session may be closing */ }
  window.vivifyStats = { ...s, serverLatencyMs: serverMs };
  $("stats").textContent = formatStats(s, serverMs);
}

function startStats() {
  clearInterval(state.statsTimer);
  state.statsTimer = setInterval(() => { state.statsPoll = pollStats(); }, 1000);
}

async function begin(mode) {
  await stop();
  setState("Connecting…");
  const pc = new RTCPeerConnection();
  state.pc = pc;
  state.mode = mode;
  watchConnection(pc);
  try {
    if (mode === "mirror") {
      state.mic = await navigator.mediaDevices.getUserMedia({ audio: {
        echoCancellation: $("ec").checked, noiseSuppression: $("ns").checked,
        autoGainControl: $("agc").checked } });
      for (const t of state.mic.getAudioTracks()) pc.addTrack(t, state.mic);
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    pc.addTransceiver("video", { direction: "recvonly" });
    const offer = await makeOffer(pc);
    state.clickedAt = performance.now();
    const res = await api.post("/v1/sessions", { avatar: state.avatar, mode, offer,
                                                 label: $("show-label").checked,
                                                 video: { fps: 25, size: 512, codec: $("codec").value } });
    state.session = res.id;
    await pc.setRemoteDescription(res.answer);
    state.ws = api.openSocket(res.id, onEvent);
    state.ws.addEventListener("open", sendControls);
    startStats();
    setBusy(true);
    if (mode === "broadcast") {
      $("viewer-link").value = `${location.origin}/watch.html?session=${res.id}`;
    }
  } catch (err) {
    await stop(null);
    setState(api.describe(err), true);
  }
}

// Ends the session (if any); ``message`` replaces the status line unless null.
async function stop(message = "Not connected.") {
  clearInterval(state.statsTimer);
  const { pc, ws, mic, session, statsPoll } = state;
  Object.assign(state, { pc: null, ws: null, mic: null, session: null, lastStats: null });
  if (statsPoll) await statsPoll;  // no request may still be in flight for a deleted session
  // End the session first: closing the peer first would let the server end it on its own and
  // turn our DELETE into a 404.
  if (session) { try { await api.del(`/v1/sessions/${session}`); } catch { /* gone already */ } }
  if (ws) ws.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  if (pc) pc.close();
  const video = $("video");
  video.srcObject = null;
  setBusy(false);
  if (message !== null) setState(message);
}

function setBusy(on) {
  $("start-call").disabled = on && state.mode === "mirror";
  $("stop").disabled = !(on && state.mode === "mirror");
  $("start-present").disabled = on && state.mode === "broadcast";
  $("stop-present").disabled = !(on && state.mode === "broadcast");
  for (const id of ["speak", "audio-file", "copy-link"]) $(id).disabled = !(on && state.mode === "broadcast");
  $("interrupt").disabled = !on;
}

// ---------------------------------------------------------------- presenter
async function speak() {
  try {
    await api.post(`/v1/sessions/${state.session}/speak`, { text: $("say").value });
  } catch (err) { setState(api.describe(err), true); }
}

async function sendAudioFile() {
  const file = $("audio-file").files[0];
  $("audio-file").value = "";
  if (!file || !state.ws) return;
  try {
    const pcm = await fileToPcm16(file);
    for (let i = 0; i < pcm.length; i += 16000) state.ws.send(pcm.slice(i, i + 16000).buffer);
    state.ws.send(JSON.stringify({ type: "segment_end" }));
  } catch (err) {
    setState(`Could not read that audio file: ${api.describe(err)}`, true);
  }
}

// ---------------------------------------------------------------- controls
function sendControls() {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "controls", emotion: $("emotion").value,
    intensity: Number($("intensity").value),
    gaze: [Number($("gaze-x").value), Number($("gaze-y").value)],
    distance: Number($("distance").value) }));
}

function setupTabs() {
  const tabs = [["tab-call", "call"], ["tab-present", "present"]];
  for (const [tab, panel] of tabs) {
    $(tab).addEventListener("click", () => {
      for (const [t, p] of tabs) {
        $(t).setAttribute("aria-selected", String(t === tab));
        $(p).hidden = p !== panel;
      }
    });
  }
}

function init() {
  setupTabs();
  setupDrop();
  $("token").value = api.token();
  $("token").addEventListener("change", () => {
    localStorage.setItem("vivify-token", $("token").value);
    loadAvatars();
  });
  $("start-call").addEventListener("click", () => begin("mirror"));
  $("stop").addEventListener("click", () => stop());
  $("start-present").addEventListener("click", () => begin("broadcast"));
  $("stop-present").addEventListener("click", () => stop());
  $("speak").addEventListener("click", speak);
  $("audio-file").addEventListener("change", sendAudioFile);
  $("copy-link").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("viewer-link").value); setState("Viewer link copied."); }
    catch { $("viewer-link").select(); setState("Press Ctrl+C to copy the link."); }
  });
  $("interrupt").addEventListener("click", () => {
    if (state.ws) state.ws.send(JSON.stringify({ type: "interrupt" }));
  });
  for (const id of ["emotion", "intensity", "gaze-x", "gaze-y", "distance"]) {
    $(id).addEventListener("input", sendControls);
  }
  $("show-stats").addEventListener("change", () => { $("stats").hidden = !$("show-stats").checked; });
  $("stats").hidden = !$("show-stats").checked;
  $("video").addEventListener("click", () => $("video").play());
  window.addEventListener("beforeunload", () => { if (state.pc) state.pc.close(); });
  loadAvatars();
  window.vivify = { state };
}

init();
