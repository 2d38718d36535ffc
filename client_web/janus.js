// Watch a broadcast through Janus (VideoRoom) with its plain HTTP API: no janus.js needed.
// The session's JSON says where: sfu = {url, room, feed}. Janus makes the offer, this page
// answers once its candidates are gathered (trickle off), and a long poll carries Janus's
// events and keeps the Janus session alive (docs/scale-out.md).

const transaction = () => Math.random().toString(36).slice(2, 14);

async function send(url, body) {
  const r = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, transaction: body.transaction || transaction() }),
  });
  const reply = await r.json();
  if (reply.janus === "error") throw new Error(`Janus: ${reply.error.reason}`);
  return reply;
}

function pluginError(event) {
  const data = (event.plugindata && event.plugindata.data) || {};
  return data.error_code ? new Error(`Janus: ${data.error}`) : null;
}

async function gathered(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, timeoutMs);
  });
}

// Subscribe `pc` to the feed; resolves once Janus has started sending. `onEnd(reason)` is
// called when Janus hangs up or stops answering. Returns { close() }.
export async function subscribe(sfu, pc, onEnd = () => {}) {
  const base = sfu.url.replace(/\/$/, "");
  const session = (await send(base, { janus: "create" })).data.id;
  const path = `${base}/${session}`;
  const handle = (await send(path, { janus: "attach", plugin: "janus.plugin.videoroom" })).data.id;
  const waiting = new Map();  // transaction → resolve
  let open = true;

  (async () => {  // the long poll
    let failures = 0;
    while (open) {
      try {
        const r = await fetch(`${path}?maxev=8&rid=${Date.now()}`);
        const events = [].concat(await r.json());
        failures = 0;
        for (const e of events) {
          if (waiting.has(e.transaction) && e.janus !== "ack") {
            waiting.get(e.transaction)(e);
            waiting.delete(e.transaction);
          } else if (e.janus === "hangup" || e.janus === "detached") {
            open = false;
            onEnd(`Janus ${e.janus}`);
          } else if (e.janus === "error") {
            open = false;
            onEnd(e.error ? e.error.reason : "Janus error");
          }
        }
      } catch {
        if (++failures >= 5) { open = false; onEnd("Janus stopped answering"); }
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  })();

  async function message(body, jsep) {
    const tx = transaction();
    const event = new Promise((resolve) => waiting.set(tx, resolve));
    const reply = await send(`${path}/${handle}`, { janus: "message", body, jsep, transaction: tx });
    const answer = reply.janus === "ack" ? await event : reply;
    const err = pluginError(answer);
    if (err) throw err;
    return answer;
  }

  const joined = await message({ request: "join", ptype: "subscriber", room: sfu.room,
                                 streams: [{ feed: sfu.feed }] });
  await pc.setRemoteDescription(joined.jsep);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered(pc);
  const local = pc.localDescription;
  await message({ request: "start" }, { type: local.type, sdp: local.sdp, trickle: false });
  return {
    close() {
      open = false;
      send(path, { janus: "destroy" }).catch(() => {});
    },
  };
}
