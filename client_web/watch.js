// Watch-only page for a broadcast session: /watch.html?session=ID
// When the server publishes the session into an SFU (--sfu-url, docs/scale-out.md) the page
// subscribes there and costs the avatar server nothing; &direct=1 joins the server itself.
import * as api from "./api.js";
import { subscribe } from "./janus.js";
import { formatStats, makeOffer, readStats } from "./rtc.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const session = params.get("session");

// Where this viewer joins: the session's SFU when it has a live one, else the server.
async function join(pc) {
  let sfu = null;
  try { sfu = (await api.get(`/v1/sessions/${session}`)).sfu; } catch { sfu = null; }
  if (sfu && sfu.state === "live" && !params.has("direct")) {
    await subscribe(sfu, pc, (reason) => setState(`The broadcast ended: ${reason}.`, true));
    window.vivifyRoute = "sfu";
    return;
  }
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const res = await api.post(`/v1/sessions/${session}/viewers`, { offer: await makeOffer(pc) });
  await pc.setRemoteDescription(res.answer);
  window.vivifyRoute = "server";
}

function setState(text, bad = false) {
  $("state").textContent = text;
  $("state").classList.toggle("bad", bad);
}

async function watch() {
  if (!session) { setState("This link has no session in it.", true); return; }
  const pc = new RTCPeerConnection();
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
    await join(pc);
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
