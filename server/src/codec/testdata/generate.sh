#!/bin/sh
# Regenerates the codec test vectors in this folder with the FFmpeg 9.0.2 bundled in the
# PyPI package imageio-ffmpeg 0.8.1 (run from the repository root):
#   python3 -m venv .tools/venv && .tools/venv/bin/pip install imageio-ffmpeg==0.8.1
#   sh server/src/codec/testdata/generate.sh
# The encoders pick levels themselves, and x265 embeds its version string in an SEI, so a
# different FFmpeg build gives different bytes; the tests only rely on what is asked below.
set -eu
here=$(dirname "$0")
ff=$(.tools/venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name, extract flags, then ffmpeg arguments after the input
make() {
    name=$1; flags=$2; src=$3; shift 3
    timeout -k 2 60 "$ff" -hide_banner -loglevel error -nostdin -y -f lavfi -i "$src" "$@" -f flv "$tmp/$name.flv"
    echo "$name"
    python3 "$here/extract_flv.py" "$tmp/$name.flv" "$here/$name" $flags
}

v() { echo "testsrc=size=$1:rate=30"; }
x265="-c:v libx265 -x265-params log-level=error"
aom="-c:v libaom-av1 -cpu-used 8 -usage realtime"
vpx="-c:v libvpx-vp9 -deadline realtime"

make hevc_1280x720_main        "" "$(v 1280x720)" -t 0.3 -pix_fmt yuv420p $x265
make hevc_854x480_main_cropped "" "$(v 854x480)" -t 0.3 -pix_fmt yuv420p $x265
make hevc_1920x1080_main10     "" "$(v 1920x1080)" -t 0.3 -pix_fmt yuv420p10le $x265
make hevc_854x480_rext_444     "" "$(v 854x480)" -t 0.3 -pix_fmt yuv444p $x265
make hevc_640x360_rext_422_10  "" "$(v 640x360)" -t 0.3 -pix_fmt yuv422p10le $x265

make av1_1280x720_main         "" "$(v 1280x720)" -t 0.3 -pix_fmt yuv420p $aom
make av1_1920x1080_main_10     "" "$(v 1920x1080)" -t 0.3 -pix_fmt yuv420p10le -c:v libsvtav1 -preset 12 -svtav1-params log-level=0
make av1_640x360_high_444      "" "$(v 640x360)" -t 0.3 -pix_fmt yuv444p $aom
make av1_426x240_pro_422       "" "$(v 426x240)" -t 0.3 -pix_fmt yuv422p $aom
make av1_320x240_pro_420_12    "" "$(v 320x240)" -t 0.3 -pix_fmt yuv420p12le $aom
make av1_320x240_main_gray     "" "$(v 320x240)" -t 0.3 -pix_fmt gray $aom

make vp9_1280x720_p0           --frame "$(v 1280x720)" -t 0.3 -pix_fmt yuv420p $vpx
make vp9_854x480_p2_10         --frame "$(v 854x480)" -t 0.3 -pix_fmt yuv420p10le $vpx
make vp9_640x360_p1_444        --frame "$(v 640x360)" -t 0.3 -pix_fmt yuv444p $vpx
make vp9_320x240_p1_gbrp       --frame "$(v 320x240)" -t 0.3 -pix_fmt gbrp $vpx
make vp9_320x240_p3_444_12     --frame "$(v 320x240)" -t 0.3 -pix_fmt yuv444p12le $vpx

make opus_48k_stereo           "" "sine=sample_rate=48000" -t 0.3 -ac 2 -c:a libopus
make opus_48k_mono             "" "sine=sample_rate=48000" -t 0.3 -ac 1 -c:a libopus
make opus_16k_mono             "" "sine=sample_rate=16000" -t 0.3 -ac 1 -c:a libopus
make opus_48k_5.1              "" "sine=sample_rate=48000" -t 0.3 -af "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0" -c:a libopus

make flac_44k_stereo_16        "" "sine=sample_rate=44100" -t 0.3 -ac 2 -c:a flac
make flac_96k_mono_24          "" "sine=sample_rate=96000" -t 0.3 -ac 1 -sample_fmt s32 -c:a flac
make ac3_48k_stereo            --frame "sine=sample_rate=48000" -t 0.3 -ac 2 -c:a ac3
make eac3_48k_5.1              --frame "sine=sample_rate=48000" -t 0.3 -af "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0" -c:a eac3
make mp3_44k_stereo            --frame "sine=sample_rate=44100" -t 0.3 -ac 2 -c:a libmp3lame
make mp3_22k_mono              --frame "sine=sample_rate=22050" -t 0.3 -ac 1 -c:a libmp3lame
