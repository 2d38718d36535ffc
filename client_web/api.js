// Thin client for the Vivify HTTP/WebSocket API (see docs/api.md).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function token() {
  return localStorage.getItem("vivify-token") || "";
}

function headers(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function parse(response) {
  if (response.status === 204) return null;
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (!response.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(response.status, err.code || "http_error",
      err.message || `HTTP ${response.status}`, response.headers.get("Retry-After"));
  }
  return body;
}

export async function get(path) {
  return parse(await fetch(path, { headers: headers() }));
}

export async function post(path, body) {
  return parse(await fetch(path, {
    method: "POST", headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  }));
}

export async function del(path) {
  return parse(await fetch(path, { method: "DELETE", headers: headers() }));
}

// The caller has asked the user to confirm the right to use the likeness; the server refuses
// uploads without consent=true and stores who (consentBy) and when with the avatar.
export async function uploadAvatar(file, consentBy = "", points = null) {
  const form = new FormData();
  form.append("image", file);
  form.append("consent", "true");
  if (consentBy) form.append("consent_by", consentBy);
  if (points) form.append("points", JSON.stringify(points));  // the face placed by hand
  return parse(await fetch("/v1/avatars", { method: "POST", headers: headers(), body: form }));
}

export function openSocket(sessionId, onEvent) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const t = token();
  const q = t ? `?token=${encodeURIComponent(t)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/sessions/${sessionId}/ws${q}`);
  ws.binaryType = "arraybuffer";
  ws.addEventListener("message", (m) => {
    try { onEvent(JSON.parse(m.data)); } catch { /* not JSON: ignore */ }
  });
  return ws;
}

export function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 503) {
      return `The server is full (${err.message}). Try again in ${err.retryAfter || "a few"} s.`;
    }
    if (err.status === 401) return "The server needs an access token (see Controls).";
    return err.message;
  }
  return String(err && err.message ? err.message : err);
}
