#!/usr/bin/env bash
# Makes the benchmark clip once: 60 s of 1280x720 30 fps H.264 at 2.5 Mbps (CBR-ish:
# maxrate 2500k, bufsize 5000k, a keyframe every 60 frames) plus AAC 128k stereo, in FLV,
# at .tools/bench/clip.flv. The driver publishes it in a loop with `ffmpeg -c copy`.
#
# Usage: scripts/bench/make-clip.sh [OUTPUT]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/.tools/bench/clip.flv}"

if [[ -s "$OUT" ]]; then
    echo "clip already at $OUT"
    exit 0
fi
mkdir -p "$(dirname "$OUT")"
# testsrc2 moves on every frame, so the encoder has real work and the bitrate holds at the
# target; -threads 2 keeps it to this machine's two cores.
timeout -k 10 900 ffmpeg -hide_banner -loglevel error -nostdin -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=44100,aformat=channel_layouts=stereo" \
    -t 60 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -threads 2 \
    -b:v 2500k -maxrate 2500k -bufsize 5000k -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a 128k -ac 2 \
    -f flv "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
ffprobe -v error -show_entries format=duration,bit_rate -show_entries stream=codec_name,width,height,avg_frame_rate \
    -of compact "$OUT"
