// Watch-only page for a broadcast session: /watch.html?session=ID
import * as api from "./api.js";
import { formatStats, makeOffer, readStats } from "./rtc.js";

const $ = (id) => document.getElementById(id);
const session = new URLSearchParams(location.search).get("session");

function setState(text, bad = false) {
  $("state").textContent = text;
  $("state").classList.toggle("bad", bad);
}

async function watch() {
  if (!session) { setState("This link has no session in it.", true); return; }
  const pc = new RTCPeerConnection();
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const video = $("video");
  video.muted = true;  // autoplay policies: start muted, unmute on a click
  pc.addEventListener("track", (e) => {
    if (!video.srcObject) video.srcObject = new MediaStream();
    video.srcObject.addTrack(e.track);
    video.play().catch(() => {});
  });
  pc.addEventListener("connectionstatechange", () => {
    if (pc.connectionState === "connected") setState("Watching.");
    if (pc.connectionState === "failed") setState("The connection failed.", true);
  });
  try {
    const res = await api.post(`/v1/sessions/${session}/viewers`, { offer: await makeOffer(pc) });
    await pc.setRemoteDescription(res.answer);
  } catch (err) {
    setState(api.describe(err), true);
    return;
  }
  let last = null;
  setInterval(async () => {
    last = await readStats(pc, last);
    window.vivifyStats = last;
    $("stats").textContent = formatStats(last, null);
  }, 1000);
  $("stats").hidden = false;
}

$("unmute").addEventListener("click", () => { $("video").muted = false; $("unmute").hidden = true; });
watch();
