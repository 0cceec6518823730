"""A GStreamer RTSP server for the relay tests: serves /cam on 127.0.0.1:PORT with a live test
picture (640x360@30, H.264 or H.265, a keyframe every second) and 48 kHz stereo AAC, RTP over
the RTSP connection when the client asks (Ferrocast does). Prints "ready" once listening.

Usage: /usr/bin/python3 rtsp_server.py PORT h264|h265
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, codec = sys.argv[1], sys.argv[2]
video = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=800 "
    "! video/x-h264,profile=main ! rtph264pay name=pay0 pt=96 config-interval=1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=800 "
    "! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=1",
}[codec]
launch = (
    "( videotestsrc is-live=true ! video/x-raw,width=640,height=360,framerate=30/1 "
    f"! videoconvert ! video/x-raw,format=I420 ! {video} "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 "
    "! avenc_aac ! rtpmp4gpay name=pay1 pt=97 )"
)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print("ready", flush=True)
GLib.MainLoop().run()
