#!/usr/bin/env bash
# Makes a benchmark clip once, in FLV, 60 s long with a keyframe every 60 frames (2 s GOP):
#   default: 1280x720 30 fps H.264 at 2.5 Mbps (CBR-ish: maxrate 2500k, bufsize 5000k) plus AAC
#            128k stereo, at .tools/bench/clip.flv; the fan-out matrix publishes it in a loop
#            with `ffmpeg -c copy`.
#   600k:    640x360 30 fps H.264 at 530 kbps plus AAC 64k stereo (600 kbps in all, the bitrate
#            of SRS's published publisher comparison), at .tools/bench/clip-600k.flv; the
#            ingest matrix (ingest.sh) has every publisher replay it.
#
# Usage: scripts/bench/make-clip.sh [OUTPUT [default|600k]]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PRESET="${2:-default}"
case "$PRESET" in
    default) SIZE=1280x720 VBITRATE=2500k ABITRATE=128k DEFAULT_OUT="$ROOT/.tools/bench/clip.flv" ;;
    600k) SIZE=640x360 VBITRATE=530k ABITRATE=64k DEFAULT_OUT="$ROOT/.tools/bench/clip-600k.flv" ;;
    *) echo "make-clip.sh: unknown preset $PRESET (default or 600k)" >&2; exit 2 ;;
esac
OUT="${1:-$DEFAULT_OUT}"
[[ -n "$OUT" ]] || OUT="$DEFAULT_OUT"

if [[ -s "$OUT" ]]; then
    echo "clip already at $OUT"
    exit 0
fi
mkdir -p "$(dirname "$OUT")"
# testsrc2 moves on every frame, so the encoder has real work and the bitrate holds at the
# target; -threads 2 keeps it to this machine's two cores.
timeout -k 10 900 ffmpeg -hide_banner -loglevel error -nostdin -y \
    -f lavfi -i "testsrc2=size=$SIZE:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=44100,aformat=channel_layouts=stereo" \
    -t 60 -map 0:v -map 1:a \
    -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p -threads 2 \
    -b:v "$VBITRATE" -maxrate "$VBITRATE" -bufsize "$((${VBITRATE%k} * 2))k" -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -b:a "$ABITRATE" -ac 2 \
    -f flv "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
ffprobe -v error -show_entries format=duration,bit_rate -show_entries stream=codec_name,width,height,avg_frame_rate \
    -of compact "$OUT"
