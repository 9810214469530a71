#!/usr/bin/env bash
# Build LiveKit's CLI (`lk`, for `lk load-test`) from the Go module proxy, outside this
# repository, when no release binary can be had (a machine that reaches package
# registries only). Nothing of lk is kept in the repository.
#
#   bench/build_lk.sh [DEST]        # DEST defaults to ~/.cache/pysfu-lk; prints the binary's path
#
# Why not a plain `go install github.com/livekit/livekit-cli/v2/cmd/lk@VERSION`:
# - lk's media clips (pkg/provider/resources: H.264, VP8 and Opus loops) are Git LFS
#   files, and module zips hold only the LFS pointers; an lk built from the proxy
#   joins and publishes but sends no media ("could not get sample from provider").
#   This script encodes stand-in clips of the same names, sizes, frame rates and
#   bitrates with ffmpeg (test patterns and tones) before building.
# - v2.18.2 pins a livekit/protocol pseudo-version the proxy does not serve; a wrapper
#   module replaces it with a later served one (it builds; only `lk agent` and
#   `lk simulate` code touches what changed between them).
# - lk needs cgo (PortAudio, WebRTC's audio processing module): a C/C++ compiler,
#   ALSA and PortAudio headers. The first build compiles ~400 C++ files (about 6
#   minutes on 2 cores).
# Needs: go >= 1.26, ffmpeg, gcc/g++, pkg-config, libasound2-dev, portaudio19-dev
# (Debian: apt-get install ffmpeg g++ pkg-config libasound2-dev portaudio19-dev).
set -euo pipefail

VERSION=v2.18.2
PROTOCOL=v1.50.5-0.20260728075222-28e604c046c6
DEST=${1:-${HOME}/.cache/pysfu-lk}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)

src=$(go mod download -json "github.com/livekit/livekit-cli/v2@${VERSION}" |
    sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$src" ] || { echo "go mod download of livekit-cli ${VERSION} failed" >&2; exit 1; }

# A writable copy of the module, with real clips in place of the LFS pointers.
work="$DEST/src"
rm -rf "$work"
cp -r "$src" "$work"
chmod -R u+w "$work"
res="$work/pkg/provider/resources"

encode_h264() { # name width height fps kbps
    ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=$2x$3:rate=$4:duration=4" \
        -c:v libx264 -preset veryfast -profile:v baseline -pix_fmt yuv420p -bf 0 \
        -b:v "$5k" -maxrate "$5k" -bufsize "$5k" -g "$(($4 * 2))" \
        -bsf:v h264_mp4toannexb -f h264 "$res/$1.h264"
}
encode_vp8() { # name width height fps kbps
    ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=$2x$3:rate=$4:duration=4" \
        -c:v libvpx -deadline realtime -b:v "$5k" -g "$(($4 * 2))" -f ivf "$res/$1.ivf"
}
# Names and layers as pkg/provider/embeds.go expects them: 180/360/720 lines at
# 15/20/30 fps for the 16:9 clips; "circles" is portrait (width in the name).
for spec in butterfly:150:400:2000 cartoon:120:400:1500; do
    IFS=: read -r name low mid high <<<"$spec"
    encode_h264 "${name}_180_${low}" 320 180 15 "$low"
    encode_h264 "${name}_360_${mid}" 640 360 20 "$mid"
    encode_h264 "${name}_720_${high}" 1280 720 30 "$high"
done
encode_h264 circles_p180_200 180 240 15 200
encode_h264 circles_p360_700 360 480 20 700
encode_h264 circles_p540_2000 540 720 30 2000
for name in crescent neon tunnel; do
    encode_vp8 "${name}_180_150" 320 180 15 150
    encode_vp8 "${name}_360_600" 640 360 20 600
    encode_vp8 "${name}_720_2000" 1280 720 30 2000
done
# One 20 ms Opus packet per Ogg page: lk sends a page as one RTP payload.
for voice in amelia benjamin clint elena emma ken sophie; do
    ffmpeg -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=4" \
        -c:a libopus -b:a 32k -frame_duration 20 -page_duration 20000 \
        -f ogg "$res/change-${voice}.ogg"
done

# The module itself becomes the main module; only the protocol version is swapped.
(
    cd "$work"
    go mod edit -replace "github.com/livekit/protocol=github.com/livekit/protocol@${PROTOCOL}"
    GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
    CGO_ENABLED=1 GOFLAGS=-mod=mod go build -tags portaudio_system -o "$DEST/lk" ./cmd/lk
) >&2
echo "$DEST/lk"
