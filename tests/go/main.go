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
	"sync"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
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

	room, err := lksdk.ConnectToRoomWithToken(*url, *token, cb, lksdk.WithAutoSubscribe(false))
	if err != nil {
		emit("connect_failed", map[string]any{"error": err.Error()})
		os.Exit(1)
	}
	emit("connected", map[string]any{
		"identity": room.LocalParticipant.Identity(), "sid": room.LocalParticipant.SID(),
		"room": room.Name(),
	})
	select {
	case <-time.After(*duration):
		room.Disconnect()
		emit("left", nil)
	case <-done:
		// The server (or the network) ended the session before -duration.
		os.Exit(3)
	}
}
