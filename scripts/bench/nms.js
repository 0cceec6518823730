// Launches Node-Media-Server (installed by scripts/bench/install-nms.sh into .tools/nms) for
// the comparison benchmark: RTMP and HTTP/WebSocket-FLV on 127.0.0.1, no auth, no recording,
// no web admin, no API, runtime data under DATA_DIR. Config keys follow NMS 4.x
// (bin/config.json of the package). SIGTERM/SIGINT stop it.
//
// Usage: node scripts/bench/nms.js RTMP_PORT HTTP_PORT DATA_DIR
"use strict";

const path = require("path");

const root = path.resolve(__dirname, "../..");
const NodeMediaServer = require(path.join(root, ".tools/nms/node_modules/node-media-server"));

const [rtmpPort, httpPort, dataDir] = process.argv.slice(2);
if (!rtmpPort || !httpPort || !dataDir) {
  console.error("usage: node scripts/bench/nms.js RTMP_PORT HTTP_PORT DATA_DIR");
  process.exit(2);
}

const config = {
  bind: "127.0.0.1",
  notify: { url: "" },
  store: { path: path.resolve(dataDir, "store") },
  rtmp: { port: Number(rtmpPort) },
  http: { port: Number(httpPort) },
  webadmin: { enable: false },
  record: { auto: false, path: path.resolve(dataDir, "record") },
};

const nms = new NodeMediaServer(config, path.resolve(dataDir, "config.json"));
nms.run();

let stopping = false;
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    if (stopping) return;
    stopping = true;
    await nms.stop();
    process.exit(0);
  });
}
