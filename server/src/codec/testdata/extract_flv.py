#!/usr/bin/env python3
"""Writes the message bodies of chosen FLV tags to .bin test vectors.

usage: extract_flv.py FILE.flv OUT_PREFIX

Writes, when the FLV has them:
  OUT_PREFIX.bin            the first non-empty sequence header body (video if the file
                            has video, else audio), i.e. the whole FLV tag body
  OUT_PREFIX.frame.bin      the first 64 bytes of the first coded frame body (video
                            keyframe, or first audio frame), only with --frame
Also prints every tag of the first few as "type timestamp length hex-prefix", so the
notes in README.md can be checked.
"""
import struct
import sys


def tags(data):
    if data[:3] != b"FLV":
        raise SystemExit("not an FLV file")
    off = struct.unpack(">I", data[5:9])[0] + 4
    while off + 11 <= len(data):
        kind = data[off]
        size = int.from_bytes(data[off + 1:off + 4], "big")
        ts = int.from_bytes(data[off + 4:off + 7], "big") | (data[off + 7] << 24)
        yield kind, ts, data[off + 11:off + 11 + size]
        off += 11 + size + 4


def is_sequence_header(kind, body):
    if not body:
        return False
    b0 = body[0]
    if kind == 9:
        if b0 & 0x80:  # enhanced: packet type 0 = SequenceStart, frame type 5 = command
            return (b0 >> 4) & 7 != 5 and b0 & 0x0F == 0 and len(body) > 5
        return len(body) > 5 and body[1] == 0
    if b0 >> 4 == 9:  # enhanced audio
        return b0 & 0x0F == 0 and len(body) > 5
    return b0 >> 4 == 10 and len(body) > 2 and body[1] == 0


def is_frame(kind, body):
    if not body:
        return False
    b0 = body[0]
    if kind == 9:
        if b0 & 0x80:
            return (b0 >> 4) & 7 == 1 and b0 & 0x0F in (1, 3)
        return b0 >> 4 == 1 and len(body) > 1 and body[1] == 1
    if b0 >> 4 == 9:
        return b0 & 0x0F == 1
    if b0 >> 4 == 10:
        return len(body) > 1 and body[1] == 1
    return True  # legacy codecs without sequence headers (MP3)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    want_frame = "--frame" in sys.argv
    path, prefix = args
    all_tags = [(k, ts, b) for k, ts, b in tags(open(path, "rb").read()) if k in (8, 9)]
    for k, ts, b in all_tags[:4]:
        print(f"  tag {k} ts {ts} len {len(b)} {b[:24].hex()}")
    kinds = [9] if any(k == 9 for k, _, _ in all_tags) else [8]
    header = next((b for k, _, b in all_tags if k in kinds and is_sequence_header(k, b)), None)
    if header is not None:
        open(prefix + ".bin", "wb").write(header)
    if want_frame:
        frame = next(b for k, _, b in all_tags if k in kinds and is_frame(k, b))
        open(prefix + ".frame.bin", "wb").write(frame[:64])


main()
