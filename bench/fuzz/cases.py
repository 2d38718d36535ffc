"""The cases of issue 15, in its order (numbers as in the issue), and :data:`CASES`, the list
``make fuzz`` runs: each an async function of the :class:`~bench.fuzz.probe.Probe` returning
an :class:`~bench.fuzz.probe.Outcome`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import time
from collections import Counter

import httpx
import websockets

from bench.fuzz.payloads import bomb_png, new_face_png, with_bad_candidate, without_codecs
from bench.fuzz.probe import (
    IDLE_GRACE_S,
    IDLE_TIMEOUT_S,
    MAX_SESSIONS,
    RSS_SLACK_MIB,
    SETTLE_S,
    Case,
    Outcome,
    Probe,
    describe,
    error_code,
    expect_error,
    expect_ws_error,
    parse_json,
    wait_event,
    ws_close_code,
    ws_connect,
    ws_session,
)
from bench.fuzz.raw_http import fast_error, hostile_request, json_body, multipart_body

# ============================================================================ the cases
# 1. Controls: every number finite and in range, at the API edge.


def controls_case(name: str, text: str) -> Case:
    """A case that sends one hostile controls message (the literal JSON text ``text``)."""

    async def run(p: Probe) -> Outcome:
        return await expect_ws_error(p, text)

    return Case(name, run, f"send {text}: a bad_message error, the server stays up")


# 2. WebSocket frames: bounded depth and size.


async def ws_nested_json(p: Probe) -> Outcome:
    """60 000 nested arrays in 60 KB (under the size cap): a RecursionError once dropped the
    socket without a close frame."""
    return await expect_ws_error(p, "[" * 60_000)


async def ws_nested_json_100k(p: Probe) -> Outcome:
    """The issue's ``"[" * 100000`` (also over 64 KiB, so a 1009 close is fine too)."""
    return await expect_ws_error(p, "[" * 100_000, close_codes=(1009,))


async def ws_oversize_text(p: Probe) -> Outcome:
    """A well-formed controls message padded past 64 KiB."""
    text = json.dumps({"type": "controls", "emotion": "happy", "pad": "x" * 70_000})
    return await expect_ws_error(p, text, close_codes=(1009,))


# 3. WebSocket auth: a handshake, then the documented close code.


def wrong_token(p: Probe) -> str:
    """A wrong token unique to this run, so the log check can look for it too."""
    return "wrong-" + p.token[-8:]


async def ws_wrong_token(p: Probe) -> Outcome:
    """A wrong token in the query: close 4401 (an HTTP 403 is unreadable to a browser)."""
    sid = await p.create_broadcast()
    try:
        res = await ws_close_code(p.ws_url(sid, wrong_token(p)))
    finally:
        await p.delete(sid)
    return Outcome(res.close_code == 4401, res.note)


async def ws_auth_header(p: Probe) -> Outcome:
    """``Authorization`` is parsed as ``Bearer <token>``: a right token under another scheme
    (the old check dropped any first 7 characters) is refused with 4401; the right one works."""
    sid = await p.create_broadcast()
    try:
        other = await ws_close_code(p.ws_url(sid), {"authorization": f"Token: {p.token}"})
        async with ws_connect(p.ws_url(sid), p.auth) as ws:
            await ws.send(json.dumps({"type": "stats"}))
            good = await wait_event(ws, lambda e: e.get("type") == "stats", 3.0)
    except websockets.InvalidStatus as exc:
        return Outcome(False, f"Bearer header refused with HTTP {exc.response.status_code}")
    finally:
        await p.delete(sid)
    ok = other.close_code == 4401 and good.event is not None
    return Outcome(ok, f"'Token: <token>': {other.note}; 'Bearer <token>': {good.note}")


async def ws_unknown_session(p: Probe) -> Outcome:
    """The right token, a session that does not exist: close 4404."""
    res = await ws_close_code(p.ws_url("0" * 32, p.token))
    return Outcome(res.close_code == 4404, res.note)


# 4. HTTP bodies: auth before body, sizes capped before reading.


async def body_json_no_token(p: Probe) -> Outcome:
    """A 300 MB JSON without a token: 401 at once, nothing buffered (it was parsed whole)."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json"}, json_body(size), size)
    p.track(r.status or 0, r.body)
    return fast_error(r, 401, "unauthorized")


async def body_json_no_token_x4(p: Probe) -> Outcome:
    """Four of them at once (once 2 GB of RSS)."""
    size = p.body_mb(300)
    rs = await asyncio.gather(*(
        hostile_request(p.server.port, "POST", "/v1/sessions",
                        {"content-type": "application/json"}, json_body(size), size)
        for _ in range(4)))
    outcomes = [fast_error(r, 401, "unauthorized") for r in rs]
    for r in rs:
        p.track(r.status or 0, r.body)
    return Outcome(all(o.passed for o in outcomes), "; ".join(o.observed for o in outcomes))


async def body_multipart_no_token(p: Probe) -> Outcome:
    """A 500 MB multipart upload without a token (once spooled to disk whole before the 401)."""
    size, boundary = p.body_mb(500), "fuzz" + secrets.token_hex(8)
    r = await hostile_request(p.server.port, "POST", "/v1/avatars",
                              {"content-type": f"multipart/form-data; boundary={boundary}"},
                              multipart_body(size, boundary), size)
    return fast_error(r, 401, "unauthorized")


async def body_json_too_large(p: Probe) -> Outcome:
    """With the token, a 300 MB JSON declared in Content-Length: 413 before reading."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json", **p.auth},
                              json_body(size), size)
    p.track(r.status or 0, r.body)
    return fast_error(r, 413, "too_large")


async def body_json_too_large_chunked(p: Probe) -> Outcome:
    """The same, chunked with no Content-Length: the streamed size is what is capped."""
    size = p.body_mb(300)
    r = await hostile_request(p.server.port, "POST", "/v1/sessions",
                              {"content-type": "application/json", **p.auth},
                              json_body(size), size, chunked=True)
    p.track(r.status or 0, r.body)
    return fast_error(r, 413, "too_large")


# 5. Admission: one reservation before any await.


async def admission_burst_cold_avatar(p: Probe) -> Outcome:
    """Upload a new portrait, then 30 concurrent creates while its renderer is still loading:
    at most --max-sessions admitted, the rest 503 server_full (once all 30 got in)."""
    async with p.client(timeout=60) as c:
        up = await c.post("/v1/avatars", files={"image": ("face.png", new_face_png(),
                                                           "image/png")},
                          data={"consent": "true", "consent_by": "probe"})
        if up.status_code != 201:
            return Outcome(False, f"upload: {describe(up)}")
        avatar = up.json()["id"]
        body = {"avatar": avatar, "mode": "broadcast"}
        rs = await asyncio.gather(*(p.create(body, c=c) for _ in range(30)),
                                  return_exceptions=True)
        await p.cleanup()
        with contextlib.suppress(httpx.HTTPError):
            await c.delete(f"/v1/avatars/{avatar}")
    tally = Counter(f"{r.status_code} {error_code(r.content) or ''}".strip()
                    if isinstance(r, httpx.Response) else type(r).__name__ for r in rs)
    admitted = sum(1 for r in rs if isinstance(r, httpx.Response) and r.status_code == 201)
    refused = tally["503 server_full"]
    ok = 1 <= admitted <= MAX_SESSIONS and admitted + refused == len(rs)
    return Outcome(ok, f"{admitted} admitted; " + ", ".join(f"{n}× {k}" for k, n in
                                                            tally.most_common()))


# 6. Idle sessions end.


async def idle_broadcast_ends(p: Probe) -> Outcome:
    """A broadcast with no peer and no WebSocket ends by itself (one once rendered 650 s)."""
    t0 = time.monotonic()
    sid = await p.create_broadcast()
    limit = IDLE_TIMEOUT_S + IDLE_GRACE_S
    async with p.client() as c:
        while (waited := time.monotonic() - t0) < limit:
            if (await c.get(f"/v1/sessions/{sid}")).status_code == 404:
                p.open_sessions.discard(sid)
                return Outcome(True, f"ended after {waited:.1f} s")
            await asyncio.sleep(0.25)
    return Outcome(False, f"still live after {limit:.0f} s")


async def idle_websocket_told(p: Probe) -> Outcome:
    """The same with a silent WebSocket open: it is told (``session_closed``) why it ends."""
    t0 = time.monotonic()
    async with ws_session(p) as (_, ws):
        res = await wait_event(ws, lambda e: e.get("code") == "session_closed",
                               IDLE_TIMEOUT_S + IDLE_GRACE_S)
    waited = time.monotonic() - t0
    if res.event is not None:
        return Outcome(True, f"session_closed after {waited:.1f} s: {res.event.get('message')}")
    return Outcome(False, res.note)


# 7. SDP: 400 bad_sdp as JSON, never a text/plain 500.


async def sdp_case(p: Probe, mode: str, sdp: str) -> httpx.Response:
    return await p.create({"mode": mode, "offer": {"type": "offer", "sdp": sdp}})


async def sdp_truncated(p: Probe) -> Outcome:
    """A real offer cut in half."""
    sdp = await p.offer("av")
    return expect_error(await sdp_case(p, "mirror", sdp[:len(sdp) // 2]), 400, "bad_sdp")


async def sdp_no_codecs(p: Probe) -> Outcome:
    """A real offer with no codecs left in it."""
    sdp = without_codecs(await p.offer("av"))
    return expect_error(await sdp_case(p, "mirror", sdp), 400, "bad_sdp")


async def sdp_bad_candidate(p: Probe) -> Outcome:
    """A real offer with a malformed candidate line."""
    sdp = with_bad_candidate(await p.offer("av"))
    return expect_error(await sdp_case(p, "mirror", sdp), 400, "bad_sdp")


async def sdp_video_only_broadcast(p: Probe) -> Outcome:
    """A valid video-only recvonly offer for a broadcast: answered (a viewer needs no mic)."""
    r = await sdp_case(p, "broadcast", await p.offer("v"))
    answer = (parse_json(r.content) or {}).get("answer") or {}
    ok = r.status_code == 201 and "m=video" in str(answer.get("sdp", ""))
    return Outcome(ok, "201 with a video answer" if ok else describe(r))


async def sdp_video_only_mirror(p: Probe) -> Outcome:
    """The same offer for a mirror session: refused clearly (mirror needs the microphone)."""
    return expect_error(await sdp_case(p, "mirror", await p.offer("v")), 400, "bad_sdp")


# 8. /v1/verify: the upload image limits.


async def verify_pixel_bomb(p: Probe) -> Outcome:
    """A 13000² PNG: 413 image_too_large, memory kept flat (it once peaked at 2 GB and kept
    500–770 MB)."""
    png = bomb_png()
    async with p.client(timeout=60) as c:
        r = await c.post("/v1/verify", files={"file": ("bomb.png", png, "image/png")})
    out = expect_error(r, 413, "image_too_large")
    return Outcome(out.passed, f"{out.observed} ({len(png) / 1e3:.0f} KB PNG)")


# 10. Origin: no state change from a foreign page.


async def origin_foreign(p: Probe) -> Outcome:
    """A create carrying a foreign ``Origin`` (with the token): 403 forbidden_origin."""
    return expect_error(await p.create({"mode": "broadcast"},
                                       headers={"origin": "http://evil.example"}),
                        403, "forbidden_origin")


async def origin_own(p: Probe) -> Outcome:
    """The server's own origin is of course allowed."""
    r = await p.create({"mode": "broadcast"}, headers={"origin": p.server.url})
    return Outcome(r.status_code == 201, describe(r) if r.status_code != 201 else "201")


# 12. Memory at the end.


async def final_rss(p: Probe) -> Outcome:
    """After every case, RSS within 20 MB of the baseline taken after the warm-up session
    (a second look after 2 s more, RSS being noisy)."""
    await asyncio.sleep(SETTLE_S)
    now = p.server.rss()
    if now is not None and p.baseline_rss is not None and now - p.baseline_rss >= RSS_SLACK_MIB:
        await asyncio.sleep(2.0)
        now = min(now, p.server.rss() or now)
    if now is None or p.baseline_rss is None:
        return Outcome(False, "no RSS to compare")
    grew = now - p.baseline_rss
    return Outcome(grew < RSS_SLACK_MIB, f"{now:.0f} MiB vs baseline {p.baseline_rss:.0f} MiB "
                                         f"({grew:+.0f})")


# 11. SIGTERM: the WebSocket is told, then closed with 1012; exit 0.


async def sigterm_drains(p: Probe) -> Outcome:
    """SIGTERM with a WebSocket open: ``session_closed`` before the 1012 close, exit 0."""
    assert p.server.proc is not None
    sid = await p.create_broadcast()
    async with ws_connect(p.ws_url(sid, p.token)) as ws:
        await asyncio.sleep(0.3)
        p.server.proc.send_signal(signal.SIGTERM)
        told = await wait_event(ws, lambda e: e.get("code") == "session_closed", 10.0)
        end = await wait_event(ws, lambda e: False, 10.0) if told.event else told
    p.open_sessions.discard(sid)
    try:
        rc = await asyncio.to_thread(p.server.proc.wait, 15)
    except subprocess.TimeoutExpired:
        rc = None
    ok = told.event is not None and end.close_code == 1012 and rc == 0
    first = "session_closed, then" if told.event else "no session_closed:"
    return Outcome(ok, f"{first} {end.note}; exit code {rc}")


# 9. The log: no secrets.


async def log_has_no_token(p: Probe) -> Outcome:
    """The whole server log (read after exit) holds neither the token nor the wrong token the
    probe tried: query strings are redacted in access logs."""
    text, wrong = p.server.log_text(), wrong_token(p)
    secrets_seen = {"token": text.count(p.token), "wrong token": text.count(wrong)}
    if not any(secrets_seen.values()):
        return Outcome(True, f"{len(text.splitlines())} log lines, no token")
    line = next(ln for ln in text.splitlines() if p.token in ln or wrong in ln)
    shown = line.replace(p.token, "<TOKEN>")[:140]
    return Outcome(False, ", ".join(f"{k} ×{n}" for k, n in secrets_seen.items()) +
                   f", e.g. {shown}")


CASES: list[Case] = [
    controls_case("ws_gaze_nan", '{"type":"controls","gaze":[NaN,0]}'),
    controls_case("ws_gaze_infinity", '{"type":"controls","gaze":[Infinity,0]}'),
    controls_case("ws_gaze_1e300", '{"type":"controls","gaze":[1e300,-1e300]}'),
    controls_case("ws_distance_infinity", '{"type":"controls","distance":Infinity}'),
    controls_case("ws_intensity_negative", '{"type":"controls","intensity":-5}'),
    Case("ws_nested_json", ws_nested_json, "60 000 nested arrays: bad_message"),
    Case("ws_nested_json_100k", ws_nested_json_100k, '"[" * 100000: bad_message or 1009'),
    Case("ws_oversize_text", ws_oversize_text, "a 70 KB text frame: bad_message or 1009"),
    Case("ws_wrong_token", ws_wrong_token, "wrong token: close 4401"),
    Case("ws_auth_header", ws_auth_header, "Authorization parsed as Bearer"),
    Case("ws_unknown_session", ws_unknown_session, "unknown session: close 4404"),
    Case("body_json_no_token", body_json_no_token, "300 MB JSON, no token: fast 401",
         timeout_s=30, memory="peak"),
    Case("body_json_no_token_x4", body_json_no_token_x4, "4 × 300 MB at once: fast 401s",
         timeout_s=45, memory="peak"),
    Case("body_multipart_no_token", body_multipart_no_token, "500 MB multipart: fast 401",
         timeout_s=30, memory="peak"),
    Case("body_json_too_large", body_json_too_large, "300 MB JSON with token: fast 413",
         timeout_s=30, memory="after"),
    Case("body_json_too_large_chunked", body_json_too_large_chunked,
         "300 MB chunked JSON with token: fast 413", timeout_s=30, memory="after"),
    Case("admission_burst_cold_avatar", admission_burst_cold_avatar,
         f"30 creates on a cold avatar: ≤ {MAX_SESSIONS} admitted", timeout_s=60),
    Case("idle_broadcast_ends", idle_broadcast_ends, "idle broadcast ends by itself"),
    Case("idle_websocket_told", idle_websocket_told, "idle: the WebSocket gets session_closed"),
    Case("sdp_truncated", sdp_truncated, "truncated offer: 400 bad_sdp"),
    Case("sdp_no_codecs", sdp_no_codecs, "offer without codecs: 400 bad_sdp"),
    Case("sdp_bad_candidate", sdp_bad_candidate, "bad candidate line: 400 bad_sdp"),
    Case("sdp_video_only_broadcast", sdp_video_only_broadcast, "video-only broadcast: 201"),
    Case("sdp_video_only_mirror", sdp_video_only_mirror, "video-only mirror: 400 bad_sdp"),
    Case("verify_pixel_bomb", verify_pixel_bomb, "13000² PNG to /v1/verify: 413, flat RSS",
         timeout_s=45, memory="after"),
    Case("origin_foreign", origin_foreign, "foreign Origin: 403 forbidden_origin"),
    Case("origin_own", origin_own, "own Origin: allowed"),
    Case("final_rss", final_rss, "RSS back within 20 MB of the baseline"),
    Case("sigterm_drains", sigterm_drains, "SIGTERM: session_closed, 1012, exit 0",
         timeout_s=40, check_up=False),
    Case("log_has_no_token", log_has_no_token, "no token in the log", check_up=False),
]
