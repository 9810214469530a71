// A LiveKit participant built with the official Go server SDK (server-sdk-go), for
// pysfu's tests: it joins with the given URL and token, prints one JSON line per room
// event on stdout, stays for -duration, then leaves. Like every server-sdk-go client
// (lk, load testers, Go apps) it sends no signal-level pings: it relies on WebSocket
// ping/pong, which is what the tests check the server copes with.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

// emit writes one event; stdout is the test's only view, so lines must not interleave.
func emit(event string, fields map[string]any) {
	line := map[string]any{"event": event, "t": float64(time.Now().UnixNano()) / 1e9}
	for k, v := range fields {
		line[k] = v
	}
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(line)
}

func main() {
	url := flag.String("url", "", "server URL (ws://host:port)")
	token := flag.String("token", "", "access token")
	duration := flag.Duration("duration", 60*time.Second, "how long to stay in the room")
	listen := flag.Bool("listen", false, "subscribe to audio and report each second what arrives")
	simulcast := flag.String("publish-ivf", "", "publish a simulcast camera from three VP8 IVF files: LOW,MEDIUM,HIGH")
	flag.Parse()
	if *url == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "usage: goclient -url URL -token TOKEN [-duration 60s]")
		os.Exit(2)
	}

	done := make(chan struct{})
	var once sync.Once
	cb := lksdk.NewRoomCallback()
	cb.OnParticipantConnected = func(p *lksdk.RemoteParticipant) {
		emit("participant_connected", map[string]any{"identity": p.Identity(), "sid": p.SID()})
	}
	cb.OnParticipantDisconnected = func(p *lksdk.RemoteParticipant) {
		emit("participant_disconnected", map[string]any{
			"identity": p.Identity(), "sid": p.SID(), "reason": p.DisconnectReason().String(),
		})
	}
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		emit("disconnected", map[string]any{"reason": string(reason)})
		once.Do(func() { close(done) })
	}
	cb.OnReconnecting = func() { emit("reconnecting", nil) }
	cb.OnReconnected = func() { emit("reconnected", nil) }
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		fields := map[string]any{"identity": params.SenderIdentity}
		if user, ok := data.(*lksdk.UserDataPacket); ok {
			fields["topic"] = user.Topic
			fields["payload"] = string(user.Payload)
		}
		emit("data_received", fields)
	}

	if *listen {
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			if track.Kind() == webrtc.RTPCodecTypeAudio {
				go readAudio(track, rp.Identity())
			}
		}
	}
	room, err := lksdk.ConnectToRoomWithToken(*url, *token, cb, lksdk.WithAutoSubscribe(*listen))
	if err != nil {
		emit("connect_failed", map[string]any{"error": err.Error()})
		os.Exit(1)
	}
	emit("connected", map[string]any{
		"identity": room.LocalParticipant.Identity(), "sid": room.LocalParticipant.SID(),
		"room": room.Name(),
	})
	if *simulcast != "" {
		if err := publishFiles(room, strings.Split(*simulcast, ",")); err != nil {
			emit("publish_failed", map[string]any{"error": err.Error()})
			os.Exit(1)
		}
	}
	select {
	case <-time.After(*duration):
		room.Disconnect()
		emit("left", nil)
	case <-done:
		// The server (or the network) ended the session before -duration.
		os.Exit(3)
	}
}

// readAudio reports once a second how many RTP packets of an audio track arrived, with
// which codec, and how many look like RFC 2198 RED with redundancy (first byte 0xEF:
// F bit and block pt 111) rather than Opus (as an Opus TOC, 0xEF would be 5 ms
// CELT frames, which WebRTC senders do not use).
func readAudio(track *webrtc.TrackRemote, identity string) {
	packets, redLike := 0, 0
	since := time.Now()
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		packets++
		if len(pkt.Payload) > 0 && pkt.Payload[0] == 0xEF {
			redLike++
		}
		if time.Since(since) >= time.Second {
			emit("audio", map[string]any{
				"identity": identity, "codec": track.Codec().MimeType,
				"packets": packets, "red_like": redLike,
			})
			since = time.Now()
		}
	}
}

// publishFiles publishes a simulcast camera whose layers are read from VP8 IVF files at
// their own pace, as lk's file publishers do: keyframe requests are ignored, keyframes
// come only where the files have them.
func publishFiles(room *lksdk.Room, paths []string) error {
	if len(paths) != 3 {
		return fmt.Errorf("want three files (LOW,MEDIUM,HIGH), got %d", len(paths))
	}
	layers := []*livekit.VideoLayer{
		{Quality: livekit.VideoQuality_LOW, Width: 160, Height: 90},
		{Quality: livekit.VideoQuality_MEDIUM, Width: 320, Height: 180},
		{Quality: livekit.VideoQuality_HIGH, Width: 640, Height: 360},
	}
	var tracks []*lksdk.LocalTrack
	for i, path := range paths {
		track, err := lksdk.NewLocalFileTrack(path,
			lksdk.ReaderTrackWithFrameDuration(time.Second/15),
			lksdk.ReaderTrackWithSampleOptions(lksdk.WithSimulcast("camera", layers[i])))
		if err != nil {
			return err
		}
		tracks = append(tracks, track)
	}
	pub, err := room.LocalParticipant.PublishSimulcastTrack(tracks, &lksdk.TrackPublicationOptions{
		Name: "camera", Source: livekit.TrackSource_CAMERA,
	})
	if err != nil {
		return err
	}
	emit("published", map[string]any{"track_sid": pub.SID()})
	return nil
}
