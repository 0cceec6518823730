// Ferrocast player page, served at /{app}/{name} and meant for iframes. The page's own query
// string (?sign=, ?key=, ?token=) is the play credential: it is passed unchanged to the media
// URLs. Only `proto` (ws, flv or hls) is the page's: it forces a protocol.
//
// The protocol follows what the browser can do: with Media Source Extensions, mpegts.js over
// WS-FLV (HTTP-FLV without WebSocket); without them, and on iOS Safari, HLS (native, else
// hls.js). While the stream is offline the page says so and polls `HEAD {name}.flv` (which
// never waits for a publisher), starting by itself once the stream is live.
'use strict';

(function () {
  const POLL_MS = 2000;
  const STALL_MS = 12000;
  const video = document.getElementById('video');
  const message = document.getElementById('message');
  const parts = location.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const app = parts[0];
  const name = parts.slice(1).join('/');
  const params = new URLSearchParams(location.search);
  const forced = params.get('proto');
  params.delete('proto');
  const query = params.toString() ? '?' + params.toString() : '';
  const base = '/' + encodeURIComponent(app) + '/' + encodeURIComponent(name);

  const status = (window.ferrocastPlayer = { state: 'starting', protocol: null, app, name });
  let player = null;
  let watchdog = null;

  function setState(s, text) {
    status.state = s;
    document.body.dataset.state = s;
    message.textContent = text || '';
    message.hidden = !text;
  }

  function isIOS() {
    const ua = navigator.userAgent;
    return /iPad|iPhone|iPod/.test(ua) || (navigator.platform === 'MacIntel' && navigator.maxTouchPoints > 1);
  }

  function chooseProtocol() {
    if (forced === 'ws' || forced === 'flv' || forced === 'hls') return forced;
    const mse = window.MediaSource && window.mpegts && mpegts.getFeatureList().mseLivePlayback;
    if (!mse || isIOS()) return 'hls';
    return 'WebSocket' in window ? 'ws' : 'flv';
  }

  function mediaUrl(protocol) {
    if (protocol === 'hls') return base + '/index.m3u8' + query;
    if (protocol === 'ws') {
      const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
      return scheme + location.host + base + '.flv' + query;
    }
    return base + '.flv' + query;
  }

  function teardown() {
    clearInterval(watchdog);
    watchdog = null;
    if (player) {
      try {
        player.destroy();
      } catch (_) {
        // Already torn down by the error that brought us here.
      }
      player = null;
    }
    video.removeAttribute('src');
    video.load();
  }

  // Back to waiting: the stream ended or the connection broke.
  function offline() {
    teardown();
    setTimeout(poll, POLL_MS);
    setState('offline', 'This stream is offline. Playback starts by itself when it goes live.');
  }

  async function poll() {
    let resp;
    try {
      resp = await fetch(base + '.flv' + query, { method: 'HEAD', cache: 'no-store' });
    } catch (_) {
      setState('offline', 'Cannot reach the server; retrying.');
      setTimeout(poll, POLL_MS);
      return;
    }
    if (resp.status === 200) {
      play();
    } else if (resp.status === 401 || resp.status === 403) {
      setState('refused', 'This stream cannot be played with this link.');
    } else {
      setState('offline', 'This stream is offline. Playback starts by itself when it goes live.');
      setTimeout(poll, POLL_MS);
    }
  }

  function play() {
    teardown();
    const protocol = chooseProtocol();
    status.protocol = protocol;
    const url = mediaUrl(protocol);
    if (protocol === 'hls') {
      if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = url;
        video.addEventListener('error', offline, { once: true });
        player = { destroy: () => video.removeEventListener('error', offline) };
      } else if (window.Hls && Hls.isSupported()) {
        const hls = new Hls({ enableWorker: false, lowLatencyMode: true });
        hls.on(Hls.Events.ERROR, (_, d) => {
          if (d.fatal) offline();
        });
        hls.loadSource(url);
        hls.attachMedia(video);
        player = hls;
      } else {
        setState('unsupported', 'This browser cannot play live video.');
        return;
      }
    } else {
      const p = mpegts.createPlayer(
        { type: 'flv', isLive: true, url },
        { enableWorker: false, liveBufferLatencyChasing: true }
      );
      p.on(mpegts.Events.ERROR, () => offline());
      // The server closes the stream when the publisher leaves for good.
      p.on(mpegts.Events.LOADING_COMPLETE, () => offline());
      p.attachMediaElement(video);
      p.load();
      player = {
        destroy: () => {
          p.pause();
          p.unload();
          p.detachMediaElement();
          p.destroy();
        },
      };
    }
    setState('loading', 'Loading...');
    const started = video.play();
    if (started) started.catch(() => setState('paused', 'Press play to start.'));
    // A stream that stops delivering (publisher gone, network cut) goes back to waiting.
    let last = -1;
    let lastChange = Date.now();
    watchdog = setInterval(() => {
      if (video.currentTime !== last) {
        last = video.currentTime;
        lastChange = Date.now();
        if (video.currentTime > 0 && status.state !== 'playing') setState('playing', '');
      } else if (!video.paused && Date.now() - lastChange > STALL_MS) {
        offline();
      }
    }, 500);
  }

  setState('starting', 'Connecting...');
  poll();
})();
