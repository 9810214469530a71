"""Drive ``livekit-client`` in headless Chromium (Debian's ``chromium`` through
Playwright's Python package) against the real server.

Each :class:`BrowserParticipant` is one page, in its own browser context, showing the
server's demo page (``/demo/``, which loads the bundled ``livekit-client`` and exposes it
as ``window.LivekitClient``); :data:`HARNESS_JS` adds ``window.harness``, a small API the
tests call through ``page.evaluate``. Chromium's fake devices stand in for camera and
microphone: its synthetic camera (moving pattern) and, for the microphone, a WAV file of a
440 Hz tone so that the Python SDK side can check it hears that tone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shlex
import shutil
import struct
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]

from .conftest import RunningServer
from .sdk_helpers import SAMPLE_RATE, TONE_HZ

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    explicit = os.environ.get("PYSFU_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def skip_reason() -> str | None:
    if async_playwright is None:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        if os.environ.get("PYSFU_CHROMIUM"):
            return f"PYSFU_CHROMIUM={os.environ['PYSFU_CHROMIUM']} does not exist"
        return "no chromium on PATH (apt-get install -y chromium, or set PYSFU_CHROMIUM)"
    return None


def write_tone_wav(path: Path, seconds: float = 2.0, freq: float = TONE_HZ) -> Path:
    """A 16-bit mono WAV of a sine tone: Chromium loops it as the fake microphone."""
    n = int(SAMPLE_RATE * seconds)
    frames = b"".join(
        struct.pack("<h", int(0.5 * 32767 * math.sin(2 * math.pi * freq * i / SAMPLE_RATE)))
        for i in range(n)
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(frames)
    return path


def chromium_args(tone_wav: Path) -> list[str]:
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={tone_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-sandbox",
    ]


# The page-side API. Every event lands in ``harness.events`` so the Python side can
# wait for it; remote tracks are attached to media elements (so they play) and looked
# up by participant identity and kind.
HARNESS_JS = r"""
(() => {
  if (window.harness) return;
  const LK = window.LivekitClient;
  const h = { room: null, events: [], logs: [] };
  const push = (name, extra) => h.events.push({ name, t: Date.now(), ...extra });
  const dec = new TextDecoder();
  const enc = new TextEncoder();
  const trackInfo = (pub, p) => ({
    identity: p && p.identity, sid: pub && pub.trackSid, kind: pub && pub.kind,
    source: pub && pub.source,
  });
  const errorInfo = (e) => ({
    name: e && e.name, message: String(e && e.message || e),
    reason: e && e.reason, reasonName: e && e.reasonName, status: e && e.status,
  });

  h.connect = async (url, token, options, connectOptions) => {
    const room = new LK.Room(options || {});
    h.room = room;
    const E = LK.RoomEvent;
    room
      .on(E.ParticipantConnected, (p) => push('participant_connected', { identity: p.identity }))
      .on(E.ParticipantDisconnected,
          (p) => push('participant_disconnected', { identity: p.identity }))
      .on(E.TrackPublished, (pub, p) => push('track_published', trackInfo(pub, p)))
      .on(E.TrackUnpublished, (pub, p) => push('track_unpublished', trackInfo(pub, p)))
      .on(E.TrackMuted, (pub, p) => push('track_muted', trackInfo(pub, p)))
      .on(E.TrackUnmuted, (pub, p) => push('track_unmuted', trackInfo(pub, p)))
      .on(E.TrackSubscribed, (track, pub, p) => {
        const el = track.attach();
        el.dataset.identity = p.identity;
        el.dataset.kind = track.kind;
        el.dataset.sid = track.sid;
        if (track.kind === 'video') { el.width = 320; el.height = 240; }
        document.body.appendChild(el);
        push('track_subscribed', trackInfo(pub, p));
      })
      .on(E.TrackUnsubscribed, (track, pub, p) => {
        track.detach().forEach((el) => el.remove());
        push('track_unsubscribed', trackInfo(pub, p));
      })
      .on(E.DataReceived, (payload, p, kind, topic) => push('data_received', {
        identity: p && p.identity, text: dec.decode(payload), kind, topic,
      }))
      .on(E.TrackSubscriptionPermissionChanged, (pub, status, p) => push(
        'track_subscription_permission_changed', { ...trackInfo(pub, p), status }))
      .on(E.TrackStreamStateChanged, (pub, state, p) => push(
        'track_stream_state_changed', { ...trackInfo(pub, p), state }))
      .on(E.SignalReconnecting, () => push('signal_reconnecting'))
      .on(E.Reconnecting, () => push('reconnecting'))
      .on(E.Reconnected, () => push('reconnected'))
      .on(E.Disconnected, (reason) => push('disconnected', { reason }));
    room.registerTextStreamHandler('lk.chat', async (reader, { identity }) => {
      push('text_received', { identity, topic: 'lk.chat', text: await reader.readAll() });
    });
    try {
      await room.connect(url, token, connectOptions || {});
      return { ok: true, identity: room.localParticipant.identity, sid: room.localParticipant.sid,
               room: room.name };
    } catch (e) {
      return { ok: false, error: errorInfo(e) };
    }
  };

  h.publish = async () => {
    const lp = h.room.localParticipant;
    await lp.setMicrophoneEnabled(true);
    await lp.setCameraEnabled(true, { resolution: { width: 320, height: 240, frameRate: 15 } });
    return [...lp.trackPublications.values()].map((pub) => pub.source);
  };
  h.publishMicrophone = async () => {
    await h.room.localParticipant.setMicrophoneEnabled(true);
  };
  h.publishCamera = async (preset, simulcast) => {
    await h.room.localParticipant.setCameraEnabled(
      true, { resolution: LK.VideoPresets[preset].resolution }, { simulcast });
  };
  h.setVideoQuality = (identity, quality) => {
    const p = h.room.remoteParticipants.get(identity);
    const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'video');
    pub.setVideoQuality(LK.VideoQuality[quality]);
  };
  // The frame rate wanted of a remote video (UpdateTrackSettings.fps).
  h.setVideoFPS = (identity, fps) => {
    const p = h.room.remoteParticipants.get(identity);
    const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'video');
    pub.setVideoFPS(fps);
  };
  // Enable or disable a remote track (UpdateTrackSettings.disabled), as adaptive
  // stream does for hidden video.
  h.setTrackEnabled = (identity, kind, enabled) => {
    const p = h.room.remoteParticipants.get(identity);
    const pub = p && [...p.trackPublications.values()].find((x) => x.kind === kind);
    pub.setEnabled(enabled);
  };
  // The camera sender's encodings as the browser has them (dynacast turns them off).
  h.encodings = () => {
    const pub = h.room.localParticipant.getTrackPublication('camera');
    const sender = pub && pub.track && pub.track.sender;
    if (!sender) return null;
    return sender.getParameters().encodings.map((e) => ({ rid: e.rid, active: e.active }));
  };
  h.sentLayers = async () => {
    const pub = h.room.localParticipant.getTrackPublication('camera');
    const report = await pub.track.getRTCStatsReport();
    const out = [];
    report && report.forEach((s) => {
      if (s.type === 'outbound-rtp') out.push({ rid: s.rid, width: s.frameWidth || 0 });
    });
    return out;
  };
  h.setEnabled = async (source, enabled) => {
    const lp = h.room.localParticipant;
    if (source === 'camera') await lp.setCameraEnabled(enabled);
    else await lp.setMicrophoneEnabled(enabled);
  };
  h.unpublish = async (source) => {
    const pub = h.room.localParticipant.getTrackPublication(source);
    await h.room.localParticipant.unpublishTrack(pub.track);
  };
  h.publishData = async (text, reliable, topic) => {
    await h.room.localParticipant.publishData(enc.encode(text), { reliable, topic });
  };
  h.sendText = async (text, topic) => {
    await h.room.localParticipant.sendText(text, { topic });
  };
  // Drop the signal WebSocket (livekit-client's own chaos hook) and, while it is down,
  // send a reliable message.
  h.signalReconnectSending = async (text, topic) => {
    const dropped = h.room.simulateScenario('signal-reconnect');
    await h.room.localParticipant.publishData(enc.encode(text), { reliable: true, topic });
    await dropped;
  };
  h.localSid = () => h.room.localParticipant.sid;
  h.disconnect = async () => { if (h.room) await h.room.disconnect(); };
  h.remoteIdentities = () => h.room ? [...h.room.remoteParticipants.keys()] : [];

  const stats = async (identity, kind) => {
    const p = h.room.remoteParticipants.get(identity);
    if (!p) return null;
    const pub = [...p.trackPublications.values()].find((x) => x.kind === kind && x.track);
    if (!pub) return null;
    const report = await pub.track.getRTCStatsReport();
    let inbound = null;
    report && report.forEach((s) => { if (s.type === 'inbound-rtp') inbound = s; });
    return inbound;
  };
  h.videoState = async (identity) => {
    const el = [...document.querySelectorAll('video')].find(
      (v) => v.dataset.identity === identity);
    if (!el) return null;
    const s = await stats(identity, 'video');
    return {
      width: el.videoWidth, height: el.videoHeight, paused: el.paused,
      frames: el.getVideoPlaybackQuality().totalVideoFrames,
      framesDecoded: s ? s.framesDecoded || 0 : 0,
    };
  };
  h.audioState = async (identity) => {
    const s = await stats(identity, 'audio');
    if (!s) return null;
    return {
      packets: s.packetsReceived || 0, samples: s.totalSamplesReceived || 0,
      energy: s.totalAudioEnergy || 0, level: s.audioLevel || 0,
      peakHz: h.peakHz(identity),
    };
  };
  // Dominant frequency of a remote audio track, through WebAudio.
  const analysers = {};
  h.peakHz = (identity) => {
    const p = h.room.remoteParticipants.get(identity);
    const pub = p && [...p.trackPublications.values()].find((x) => x.kind === 'audio' && x.track);
    if (!pub) return null;
    let a = analysers[pub.trackSid];
    if (!a) {
      const ctx = new AudioContext();
      const src = ctx.createMediaStreamSource(new MediaStream([pub.track.mediaStreamTrack]));
      const node = ctx.createAnalyser();
      node.fftSize = 8192;
      src.connect(node);
      a = analysers[pub.trackSid] = { ctx, node };
    }
    const bins = new Float32Array(a.node.frequencyBinCount);
    a.node.getFloatFrequencyData(bins);
    let best = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
    if (!isFinite(bins[best]) || bins[best] < -90) return 0;
    return best * a.ctx.sampleRate / a.node.fftSize;
  };
  window.harness = h;
})();
"""


PC_COUNTER_JS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__peerConnections = 0;
  window.RTCPeerConnection = function (...args) {
    window.__peerConnections += 1;
    return new Native(...args);
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
})();
"""


class BrowserParticipant:
    """One browser tab on the demo page, driving ``livekit-client`` via ``window.harness``."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.console: list[str] = []
        self.websockets: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        page.on("websocket", lambda ws: self.websockets.append(ws.url))

    def _on_console(self, msg: ConsoleMessage) -> None:
        where = msg.location.get("url", "") if msg.location else ""
        self.console.append(f"{msg.type}: {msg.text} @{where}")

    def errors(self) -> list[str]:
        """Console errors, except Chromium's own network lines for the expected 404 of
        the /rtc/v1 upgrade and of /rtc/v1/validate (PROTOCOL.md §1)."""
        return [
            line
            for line in self.console
            if line.startswith(("error", "pageerror"))
            and not ("/rtc/v1" in line and "404" in line)
            and not (
                line.startswith("error: Failed to load resource")
                and "404" in line
                and "/rtc/v1/validate" in line
            )
        ]

    async def open(self, server: RunningServer) -> None:
        await self.page.goto(server.http_url + "/demo/")
        await self.page.wait_for_function("() => !!window.LivekitClient")
        await self.page.evaluate(HARNESS_JS)

    async def peer_connections(self) -> int:
        """RTCPeerConnections the page has created."""
        return int(await self.page.evaluate("() => window.__peerConnections"))

    async def call(self, fn: str, *args: Any) -> Any:
        """``harness.<fn>(*args)`` in the page."""
        return await self.page.evaluate(f"(args) => window.harness.{fn}(...args)", list(args))

    async def connect(
        self, server: RunningServer, token: str, options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Connect with ``livekit-client`` RoomOptions ``options`` (e.g. dynacast)."""
        result: dict[str, Any] = await self.call("connect", server.url, token, options or {})
        return result

    async def join(
        self, server: RunningServer, room: str = "room1", options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = await self.connect(server, server.token_for(self.name, room), options)
        assert result["ok"], f"{self.name} could not connect: {result} {self.console[-20:]}"
        return result

    async def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = await self.page.evaluate("() => window.harness.events")
        return events

    async def wait_event(
        self,
        name: str,
        pred: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 20,
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in await self.events():
                    if event["name"] == name and pred(event):
                        return event
                await asyncio.sleep(0.1)

    async def wait_state(
        self,
        fn: str,
        identity: str,
        pred: Callable[[dict[str, Any]], bool],
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Poll ``harness.<fn>(identity)`` (videoState/audioState) until ``pred``."""
        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self.call(fn, identity)
                    if last is not None and pred(last):
                        return last
                    await asyncio.sleep(0.25)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: {fn}({identity}) never matched; last {last}; "
                f"console tail {self.console[-15:]}"
            ) from None


@contextlib.asynccontextmanager
async def chromium(
    tmp_path: Path, wrap: Callable[[list[str]], list[str]] | None = None
) -> AsyncIterator[Browser]:
    """Headless Chromium; ``wrap`` turns its command into another (run it inside a
    network namespace: Playwright talks to it over a pipe, so that still works)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    wav = write_tone_wav(tmp_path / "tone.wav")
    executable = chromium_path()
    assert executable is not None
    if wrap is not None:
        script = tmp_path / "chromium-wrapped"
        command = " ".join(shlex.quote(a) for a in wrap([executable]))
        script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        script.chmod(0o755)
        executable = str(script)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=chromium_args(wav), headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_participant(browser: Browser, server: RunningServer, name: str) -> BrowserParticipant:
    context = await browser.new_context(viewport={"width": 1100, "height": 700})
    # Count the page's RTCPeerConnections (one on /rtc/v1, two on /rtc).
    await context.add_init_script(PC_COUNTER_JS)
    participant = BrowserParticipant(await context.new_page(), name)
    await participant.open(server)
    return participant
