// pysfu demo page: join a room with camera and microphone, see everyone in it, chat.
// Bundled with livekit-client by esbuild into pysfu/demo/demo.js (see demo/README.md).
import * as LivekitClient from 'livekit-client';

const { Room, RoomEvent, Track, VideoPresets } = LivekitClient;

// Exposed for the browser tests and for poking at the room from the devtools console.
window.LivekitClient = LivekitClient;

const CHAT_TOPIC = 'lk.chat';
const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
let room = null;

function serverUrl() {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;
}

function status(text, isError = false) {
  const el = $('#status');
  el.textContent = text;
  el.className = isError ? 'error' : '';
}

async function fetchToken(roomName, identity) {
  const q = new URLSearchParams({ room: roomName, identity });
  const resp = await fetch(`token?${q}`);
  if (!resp.ok) {
    throw new Error(`no dev token (${resp.status}): ${await resp.text()} — paste a token instead`);
  }
  return (await resp.json()).token;
}

function tileFor(participant) {
  const id = `tile-${CSS.escape(participant.identity)}`;
  let tile = document.getElementById(id);
  if (!tile) {
    tile = document.createElement('div');
    tile.id = id;
    tile.className = 'tile';
    tile.dataset.identity = participant.identity;
    tile.innerHTML = '<video autoplay playsinline muted></video><div class="label"></div>';
    $('#tiles').appendChild(tile);
  }
  return tile;
}

function render() {
  if (!room) return;
  const everyone = [room.localParticipant, ...room.remoteParticipants.values()];
  const keep = new Set(everyone.map((p) => `tile-${CSS.escape(p.identity)}`));
  for (const tile of [...document.querySelectorAll('.tile')]) {
    if (!keep.has(tile.id)) tile.remove();
  }
  for (const p of everyone) {
    const tile = tileFor(p);
    const video = tile.querySelector('video');
    const cam = p.getTrackPublication(Track.Source.Camera);
    const mic = p.getTrackPublication(Track.Source.Microphone);
    const camTrack = cam && !cam.isMuted ? cam.track : undefined;
    if (camTrack && video.dataset.trackSid !== cam.trackSid) {
      camTrack.attach(video);
      video.dataset.trackSid = cam.trackSid;
    } else if (!camTrack && video.dataset.trackSid) {
      video.srcObject = null;
      delete video.dataset.trackSid;
    }
    tile.classList.toggle('no-video', !camTrack);
    tile.classList.toggle('speaking', p.isSpeaking);
    const you = p === room.localParticipant ? ' (you)' : '';
    const micState = !mic ? 'no mic' : mic.isMuted ? 'mic muted' : 'mic on';
    const camState = !cam ? 'no camera' : cam.isMuted ? 'camera muted' : 'camera on';
    tile.querySelector('.label').textContent =
      `${p.name || p.identity}${you} · ${micState} · ${camState}`;
  }
  $('#people').textContent = `${everyone.length} in room “${room.name}”`;
}

function addChat(from, text) {
  const line = document.createElement('div');
  line.className = 'chat-line';
  line.textContent = `${from}: ${text}`;
  $('#chat-log').appendChild(line);
  line.scrollIntoView({ block: 'end' });
}

async function join(event) {
  event.preventDefault();
  const roomName = $('#room').value.trim();
  const identity = $('#identity').value.trim();
  $('#join').disabled = true;
  try {
    const token = $('#token').value.trim() || (await fetchToken(roomName, identity));
    room = new Room({
      adaptiveStream: true,
      dynacast: true,
      videoCaptureDefaults: { resolution: VideoPresets.h360.resolution },
    });
    window.room = room;
    room
      .on(RoomEvent.ParticipantConnected, render)
      .on(RoomEvent.ParticipantDisconnected, render)
      .on(RoomEvent.TrackSubscribed, (track) => {
        if (track.kind === Track.Kind.Audio) {
          const el = track.attach();
          el.dataset.trackSid = track.sid;
          $('#audio').appendChild(el);
        }
        render();
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        track.detach().forEach((el) => el.closest('#audio') && el.remove());
        render();
      })
      .on(RoomEvent.TrackMuted, render)
      .on(RoomEvent.TrackUnmuted, render)
      .on(RoomEvent.TrackPublished, render)
      .on(RoomEvent.TrackUnpublished, render)
      .on(RoomEvent.LocalTrackPublished, render)
      .on(RoomEvent.LocalTrackUnpublished, render)
      .on(RoomEvent.ActiveSpeakersChanged, render)
      .on(RoomEvent.Disconnected, (reason) => {
        status(`disconnected (${reason ?? 'left'})`);
        $('#tiles').replaceChildren();
        $('#audio').replaceChildren();
        document.body.classList.remove('joined');
        $('#join').disabled = false;
        room = null;
      });
    room.registerTextStreamHandler(CHAT_TOPIC, async (reader, { identity: from }) => {
      addChat(from, await reader.readAll());
    });
    status('connecting…');
    await room.connect(serverUrl(), token);
    document.body.classList.add('joined');
    status(`connected to ${room.name} as ${room.localParticipant.identity}`);
    render();
    try {
      await room.localParticipant.enableCameraAndMicrophone();
    } catch (e) {
      status(`connected, but camera/microphone failed: ${e.message}`, true);
    }
    render();
  } catch (e) {
    status(e.message || String(e), true);
    if (room) await room.disconnect();
    room = null;
    $('#join').disabled = false;
  }
}

async function toggle(source) {
  if (!room) return;
  const lp = room.localParticipant;
  if (source === Track.Source.Camera) await lp.setCameraEnabled(!lp.isCameraEnabled);
  else await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
  render();
}

async function sendChat(event) {
  event.preventDefault();
  const input = $('#chat-text');
  const text = input.value.trim();
  if (!room || !text) return;
  await room.localParticipant.sendText(text, { topic: CHAT_TOPIC });
  addChat(`${room.localParticipant.identity} (you)`, text);
  input.value = '';
}

$('#room').value = params.get('room') || 'demo';
$('#identity').value = params.get('identity') || `guest-${Math.floor(Math.random() * 10000)}`;
$('#join-form').addEventListener('submit', join);
$('#toggle-mic').addEventListener('click', () => toggle(Track.Source.Microphone));
$('#toggle-cam').addEventListener('click', () => toggle(Track.Source.Camera));
$('#leave').addEventListener('click', () => room && room.disconnect());
$('#chat-form').addEventListener('submit', sendChat);
status(`livekit-client ${LivekitClient.version} ready`);
