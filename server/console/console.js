// Ferrocast web console. Plain JavaScript, no build step: everything shown comes from the
// REST API under /api/v1 on this origin, called with the JWT from POST /api/v1/login (kept in
// sessionStorage, so it ends with the tab). Lifecycle events (GET /api/v1/events, SSE) trigger
// refreshes of the stream and session lists; load samples come from GET /api/v1/load.
'use strict';

(function () {
  const API = '/api/v1';
  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem('ferrocast.token'),
    events: null,
    timers: [],
    streams: [],
    sessions: [],
    selected: null, // {app, name}
    urls: null,
    player: null,
    refreshQueued: false,
  };
  // For tests and curious operators: what the console currently shows.
  window.ferrocastConsole = state;

  // ---------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    let json = null;
    try {
      json = await resp.json();
    } catch (_) {
      // Not JSON: a 404 from a server whose API is elsewhere, a proxy's error page.
    }
    if (resp.status === 401 && path !== '/login') {
      logout('Your session has ended; log in again.');
    }
    if (!resp.ok || !json || json.success === false) {
      throw new ApiError(resp.status, (json && json.message) || resp.statusText || 'request failed');
    }
    return json.data;
  }

  // ---------------------------------------------------------------------------------------
  // Formatting

  function text(tag, content, className) {
    const el = document.createElement(tag);
    if (content !== undefined && content !== null) el.textContent = String(content);
    if (className) el.className = className;
    return el;
  }

  function cell(row, content, label) {
    const td = text('td', content);
    // Shown as a label when the table collapses into cards on narrow screens.
    if (label) td.dataset.label = label;
    row.appendChild(td);
    return td;
  }

  function bytes(n) {
    if (!n) return '0 B';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : n) + ' ' + units[i];
  }

  function bits(n) {
    if (!n) return '0 bit/s';
    const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i++;
    }
    return (i ? n.toFixed(1) : n) + ' ' + units[i];
  }

  function duration(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    s %= 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
  }

  function button(label, onClick, extraClass) {
    const b = text('button', label, extraClass);
    b.type = 'button';
    b.addEventListener('click', onClick);
    return b;
  }

  function notice(message) {
    const n = $('notice');
    n.textContent = message || '';
    n.hidden = !message;
  }

  // ---------------------------------------------------------------------------------------
  // Login

  function showLogin(message) {
    $('app-view').hidden = true;
    $('logout').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    $('password').value = '';
    $('password').focus();
  }

  function logout(message) {
    state.token = null;
    sessionStorage.removeItem('ferrocast.token');
    stopLive();
    showLogin(message);
  }

  async function login(ev) {
    ev.preventDefault();
    const button = $('login-button');
    button.disabled = true;
    $('login-error').textContent = '';
    try {
      const data = await api('POST', '/login', { username: $('username').value, password: $('password').value });
      state.token = data.token;
      sessionStorage.setItem('ferrocast.token', data.token);
      $('password').value = '';
      await start();
    } catch (e) {
      $('login-error').textContent =
        e.status === 429 ? 'Too many failed logins; wait a few minutes.' : e.message || 'Login failed.';
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live view

  async function start() {
    const info = await api('GET', '/info');
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    $('logout').hidden = false;
    $('server-info').textContent = 'v' + info.version + ', up ' + duration(info.uptime * 1000);
    const app = (info.apps[0] && info.apps[0].name) || 'live';
    $('publish-hint').textContent = 'rtmp://' + location.hostname + ':' + info.ports.rtmp + '/' + app + '/NAME';
    state.info = info;
    connectEvents();
    await Promise.all([refreshLists(), refreshLoad(), refreshRelays(), probeRecords()]);
    // Bitrates and byte counts change without events: a slow poll keeps them current.
    state.timers.push(setInterval(refreshLists, 5000));
    state.timers.push(setInterval(refreshLoad, 2000));
    state.timers.push(setInterval(refreshRelays, 5000));
    state.timers.push(setInterval(probeRecords, 15000));
    state.timers.push(setInterval(renderStreams, 1000)); // uptimes
  }

  function stopLive() {
    if (state.events) state.events.close();
    state.events = null;
    state.timers.forEach(clearInterval);
    state.timers = [];
    stopPreview();
  }

  function connectEvents() {
    // EventSource cannot send headers: the token goes in the query, which the server
    // redacts from its logs.
    const es = new EventSource(API + '/events?token=' + encodeURIComponent(state.token));
    state.events = es;
    const live = $('live-state');
    es.onopen = () => {
      live.textContent = 'live';
      live.className = 'badge ok';
    };
    es.onerror = () => {
      live.textContent = 'reconnecting';
      live.className = 'badge warn';
    };
    const onLifecycle = (ev) => {
      queueRefresh();
      // A new publisher's codecs and frame rate are known a moment after it starts.
      if (ev && ev.type === 'postPublish') setTimeout(refreshLists, 1500);
    };
    for (const name of ['postPublish', 'donePublish', 'postPlay', 'donePlay', 'doneConnect']) {
      es.addEventListener(name, onLifecycle);
    }
    es.addEventListener('relayState', () => refreshRelays());
    es.onmessage = onLifecycle;
  }

  // Events come in bursts (a publisher brings several): one refresh per burst.
  function queueRefresh() {
    if (state.refreshQueued) return;
    state.refreshQueued = true;
    setTimeout(() => {
      state.refreshQueued = false;
      refreshLists();
    }, 150);
  }

  async function refreshLists() {
    try {
      const [streams, sessions] = await Promise.all([api('GET', '/streams'), api('GET', '/sessions')]);
      state.streams = streams.streams || [];
      state.sessions = sessions.sessions || [];
      notice((streams.missingPods || []).length ? 'Pods not answering: ' + streams.missingPods.join(', ') : '');
      renderStreams();
      renderSessions();
    } catch (e) {
      if (e.status !== 401) notice('Cannot read streams: ' + e.message);
    }
  }

  function playersByProtocol(s) {
    const counts = {};
    for (const x of state.sessions) {
      if (x.role === 'player' && x.app === s.app && x.name === s.name) {
        counts[x.protocol] = (counts[x.protocol] || 0) + 1;
      }
    }
    const parts = Object.keys(counts)
      .sort()
      .map((p) => p + ' ' + counts[p]);
    return parts.length ? parts.join(', ') : String(s.subscribers || 0);
  }

  function renderStreams() {
    const body = $('streams-table').tBodies[0];
    const live = state.streams.filter((s) => s.publisher);
    $('stream-count').textContent = '(' + live.length + ')';
    $('streams-empty').hidden = live.length > 0;
    $('streams-table').hidden = live.length === 0;
    const rows = [];
    for (const s of live) {
      const tr = document.createElement('tr');
      tr.dataset.stream = s.app + '/' + s.name;
      const name = cell(tr, null, 'Stream');
      name.appendChild(text('strong', s.app + '/' + s.name));
      if (s.pod) name.appendChild(text('span', ' on ' + s.pod, 'muted'));
      const v = s.video;
      cell(
        tr,
        v ? [v.codec, v.width && v.height ? v.width + 'x' + v.height : '', v.fps ? v.fps + ' fps' : ''].filter(Boolean).join(' ') : '-',
        'Video'
      );
      const a = s.audio;
      cell(tr, a ? [a.codec, a.samplerate ? a.samplerate / 1000 + ' kHz' : '', a.channels ? a.channels + ' ch' : ''].filter(Boolean).join(' ') : '-', 'Audio');
      cell(tr, bits((s.bitrate || 0) * 1000) + ' / ' + bits((s.bitrateOut || 0) * 1000), 'Bitrate');
      cell(tr, playersByProtocol(s), 'Players');
      cell(tr, duration(Date.now() - s.publisher.createTime), 'Uptime');
      cell(tr, s.publisher.protocol + ' from ' + s.publisher.ip, 'Publisher');
      const actions = cell(tr, null);
      actions.className = 'actions';
      actions.appendChild(button('Preview', () => select(s.app, s.name), 'primary'));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function renderSessions() {
    const body = $('sessions-table').tBodies[0];
    $('session-count').textContent = '(' + state.sessions.length + ')';
    const rows = state.sessions.map((x) => {
      const tr = document.createElement('tr');
      tr.dataset.session = x.id;
      cell(tr, x.id, 'Id');
      cell(tr, x.protocol, 'Protocol');
      cell(tr, x.role || '-', 'Role');
      cell(tr, x.app ? x.app + '/' + x.name : '-', 'Stream');
      cell(tr, x.ip, 'Address');
      cell(tr, duration(Date.now() - x.connectTime) + ' ago', 'Connected');
      cell(tr, bytes(x.inBytes) + ' / ' + bytes(x.outBytes), 'In / out');
      const actions = cell(tr, null);
      actions.className = 'actions';
      const kick = button('Kick', () => kickSession(x, kick), 'danger');
      kick.setAttribute('aria-label', 'Kick session ' + x.id + (x.role ? ' (' + x.role + ')' : ''));
      actions.appendChild(kick);
      return tr;
    });
    body.replaceChildren(...rows);
  }

  async function kickSession(x, btn) {
    const what = (x.role || 'session') + ' ' + x.id + (x.app ? ' on ' + x.app + '/' + x.name : '');
    if (!window.confirm('End ' + what + '?')) return;
    btn.disabled = true;
    try {
      await api('DELETE', '/sessions/' + encodeURIComponent(x.id));
      notice('');
    } catch (e) {
      notice('Kick failed: ' + e.message);
    }
    refreshLists();
  }

  // ---------------------------------------------------------------------------------------
  // Stream detail: URLs and the embedded player

  async function select(app, name) {
    stopPreview();
    state.selected = { app, name };
    $('detail').hidden = false;
    $('detail-title').textContent = app + '/' + name;
    $('publish-urls').replaceChildren();
    $('play-urls').replaceChildren();
    $('urls-note').textContent = '';
    $('detail').scrollIntoView({ block: 'start' });
    try {
      // Stream keys never reach the browser: key-mode URLs carry a placeholder.
      const path = '/streams/' + encodeURIComponent(app) + '/' + encodeURIComponent(name) + '/urls?streamKeys=omit';
      state.urls = await api('GET', path);
    } catch (e) {
      $('urls-note').textContent = 'Cannot get URLs: ' + e.message;
      return;
    }
    renderUrls();
    startPreview();
    $('preview-play').focus();
  }

  const URL_LABELS = {
    rtmp: 'RTMP', rtmps: 'RTMPS', httpFlv: 'HTTP-FLV', httpsFlv: 'HTTPS-FLV', wsFlv: 'WS-FLV',
    wssFlv: 'WSS-FLV', hls: 'HLS', hlsHttps: 'HLS (HTTPS)', page: 'Player page', pageHttps: 'Player page (HTTPS)',
  };

  function urlItem(label, url) {
    const li = document.createElement('li');
    const id = 'url-' + Math.random().toString(36).slice(2);
    const l = text('label', label);
    l.htmlFor = id;
    const input = document.createElement('input');
    input.id = id;
    input.readOnly = true;
    input.value = url;
    input.addEventListener('focus', () => input.select());
    const copy = button('Copy', async () => {
      try {
        await navigator.clipboard.writeText(url);
      } catch (_) {
        // Without the async clipboard (plain http on another host): select for Ctrl+C.
        input.select();
        document.execCommand('copy');
      }
      copy.textContent = 'Copied';
      setTimeout(() => (copy.textContent = 'Copy'), 1500);
    });
    copy.setAttribute('aria-label', 'Copy ' + label + ' URL');
    li.append(l, input, copy);
    return li;
  }

  function renderUrls() {
    const u = state.urls;
    // In the order of URL_LABELS (RTMP first), then anything newer servers add.
    const order = Object.keys(URL_LABELS);
    const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length);
    const list = (target, urls) =>
      $(target).replaceChildren(
        ...Object.keys(urls)
          .sort((a, b) => rank(a) - rank(b))
          .map((k) => urlItem(URL_LABELS[k] || k, urls[k]))
      );
    list('publish-urls', u.publish);
    list('play-urls', u.play);
    const notes = [];
    if (u.expires) notes.push('Signed URLs expire at ' + new Date(u.expires * 1000).toLocaleString() + '.');
    if (u.auth.publish === 'key' || u.auth.play === 'key') notes.push('STREAM_KEY stands for the stream key, which the console never shows.');
    if (u.auth.publish === 'token' || u.auth.play === 'token') notes.push('Token apps: append ?token= with a token from your service.');
    $('urls-note').textContent = notes.join(' ');
  }

  function previewState(message) {
    $('preview-state').textContent = message;
  }

  // The TLS twin of each preview protocol's URL in the /urls answer.
  const TLS_URL = { wsFlv: 'wssFlv', httpFlv: 'httpsFlv', hls: 'hlsHttps' };

  // A console opened over HTTPS may not load ws:// or http:// media (mixed content): it
  // previews over the server's TLS port, or, when the server serves no TLS itself (TLS ends
  // at a proxy in front of it), over this page's own origin.
  function previewUrl(play, kind) {
    if (location.protocol !== 'https:') return play[kind];
    if (play[TLS_URL[kind]]) return play[TLS_URL[kind]];
    const plain = new URL(play[kind]);
    const scheme = kind === 'wsFlv' ? 'wss://' : 'https://';
    return scheme + location.host + plain.pathname + plain.search;
  }

  function startPreview() {
    stopPreview();
    const u = state.urls;
    if (!u) return;
    if (u.auth.play === 'key' || u.auth.play === 'token') {
      previewState('Preview needs a play credential (' + u.auth.play + ' mode), which the console does not hold.');
      return;
    }
    const video = $('preview');
    const kind = $('preview-protocol').value;
    const url = previewUrl(u.play, kind);
    if (kind === 'hls') {
      if (window.Hls && Hls.isSupported()) {
        const hls = new Hls({ enableWorker: false, lowLatencyMode: true });
        hls.on(Hls.Events.ERROR, (_, d) => {
          if (d.fatal) previewState('HLS error: ' + d.details);
        });
        hls.loadSource(url);
        hls.attachMedia(video);
        state.player = { destroy: () => hls.destroy() };
      } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = url;
        state.player = { destroy: () => video.removeAttribute('src') };
      } else {
        previewState('This browser cannot play HLS.');
        return;
      }
    } else {
      if (!window.mpegts || !mpegts.getFeatureList().mseLivePlayback) {
        previewState('This browser cannot play FLV (no Media Source Extensions); choose HLS.');
        return;
      }
      const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, { enableWorker: false, liveBufferLatencyChasing: true });
      player.on(mpegts.Events.ERROR, (type, detail) => previewState('Player error: ' + type + ' ' + detail));
      player.attachMediaElement(video);
      player.load();
      state.player = {
        destroy: () => {
          player.pause();
          player.unload();
          player.detachMediaElement();
          player.destroy();
        },
      };
    }
    previewState('Playing ' + (URL_LABELS[kind] || kind));
    const p = video.play();
    if (p) p.catch(() => {});
  }

  function stopPreview() {
    if (state.player) {
      try {
        state.player.destroy();
      } catch (_) {
        // Already torn down by an error.
      }
      state.player = null;
    }
    const video = $('preview');
    video.removeAttribute('src');
    video.load();
    previewState('');
  }

  // ---------------------------------------------------------------------------------------
  // Load charts

  async function refreshLoad() {
    let data;
    try {
      data = await api('GET', '/load');
    } catch (_) {
      return;
    }
    const s = data.samples || [];
    const last = s[s.length - 1];
    chart('chart-cpu', [s.map((x) => x.cpuPercent)], (v) => v.toFixed(0) + '%');
    chart('chart-mem', [s.map((x) => x.rssBytes)], bytes);
    chart('chart-bw', [s.map((x) => x.inBitsPerSec), s.map((x) => x.outBitsPerSec)], bits);
    chart('chart-sessions', [s.map((x) => x.sessions)], (v) => String(Math.round(v)));
    if (last) {
      $('cpu-caption').textContent = 'CPU ' + last.cpuPercent.toFixed(1) + '%';
      $('mem-caption').textContent = 'Memory ' + bytes(last.rssBytes);
      $('sess-caption').textContent =
        'Sessions ' + last.sessions + ' (' + last.publishers + ' publishing, ' + last.players + ' playing)';
      $('bw-caption').replaceChildren(
        'Bandwidth ',
        text('span', 'in ' + bits(last.inBitsPerSec), 'legend-in'),
        ' / ',
        text('span', 'out ' + bits(last.outBitsPerSec), 'legend-out')
      );
    }
  }

  const SERIES_COLOURS = ['#2b7bd6', '#d2691e'];

  // A line chart of one or more series on a shared scale, newest at the right.
  function chart(id, series, format) {
    const canvas = $(id);
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const max = Math.max(1, ...series.flat());
    const pad = 16;
    g.strokeStyle = '#ccc';
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(0, h - pad + 0.5);
    g.lineTo(w, h - pad + 0.5);
    g.stroke();
    g.fillStyle = '#666';
    g.font = '11px system-ui, sans-serif';
    g.fillText(format(max), 4, 11);
    const n = Math.max(2, ...series.map((s) => s.length));
    g.fillText(duration((n - 1) * 2000) + ' ago', 4, h - 3);
    series.forEach((values, i) => {
      g.strokeStyle = SERIES_COLOURS[i % SERIES_COLOURS.length];
      g.lineWidth = 2;
      g.beginPath();
      values.forEach((v, j) => {
        const x = w - ((values.length - 1 - j) / (n - 1)) * w;
        const y = h - pad - (v / max) * (h - pad - 14);
        if (j === 0) g.moveTo(x, y);
        else g.lineTo(x, y);
      });
      g.stroke();
    });
  }

  // ---------------------------------------------------------------------------------------
  // Relays and recordings

  async function refreshRelays() {
    let data;
    try {
      data = await api('GET', '/relays');
    } catch (_) {
      return;
    }
    const relays = data.relays || [];
    $('relay-count').textContent = '(' + relays.length + ')';
    $('relays-empty').hidden = relays.length > 0;
    $('relays-table').hidden = relays.length === 0;
    $('relays-table').tBodies[0].replaceChildren(
      ...relays.map((r) => {
        const tr = document.createElement('tr');
        cell(tr, r.id, 'Id');
        cell(tr, r.mode + (r.origin ? ' (' + r.origin + ')' : ''), 'Mode');
        cell(tr, r.stream, 'Stream');
        cell(tr, r.source || r.target || '-', 'Remote');
        cell(tr, r.state + (r.last_error ? ': ' + r.last_error : ''), 'State');
        cell(tr, bytes(r.bytes_in) + ' / ' + bytes(r.bytes_out), 'Bytes');
        return tr;
      })
    );
  }

  // The fields of GET /records, as the table shows them.
  const RECORD_COLUMNS = [
    ['id', 'Id'],
    ['app', 'App'],
    ['name', 'Stream'],
    ['file', 'File'],
    ['format', 'Format'],
    ['size', 'Size', (r) => bytes(r.size)],
    ['start', 'Started', (r) => new Date(r.start).toLocaleString()],
    // A file being written shows for how long it has been.
    ['state', 'State', (r) => (r.state === 'recording' ? 'recording for ' + duration(Date.now() - r.start) : r.state)],
    ['local', 'Local copy', (r) => (r.local ? 'yes' : 'no')],
    ['object', 'Object', (r) => (r.bucket ? r.bucket + '/' + r.key : '-')],
  ];

  // Recordings appear once the server has them: the section shows when /records answers.
  async function probeRecords() {
    let data;
    try {
      data = await api('GET', '/records');
    } catch (_) {
      $('records').hidden = true;
      $('records-link').hidden = true;
      return;
    }
    const records = Array.isArray(data) ? data : data.records || [];
    $('records').hidden = false;
    $('records-link').hidden = false;
    $('record-count').textContent = '(' + records.length + ')';
    const table = $('records-table');
    table.tHead.rows[0].replaceChildren(
      ...RECORD_COLUMNS.map(([, label]) => {
        const th = text('th', label);
        th.scope = 'col';
        return th;
      })
    );
    table.tBodies[0].replaceChildren(
      ...records.map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.record = r.id;
        for (const [key, label, show] of RECORD_COLUMNS) {
          const v = show ? show(r) : r[key];
          cell(tr, v === undefined || v === null ? '-' : v, label);
        }
        return tr;
      })
    );
  }

  // ---------------------------------------------------------------------------------------
  // Start

  async function boot() {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout(''));
    $('preview-play').addEventListener('click', startPreview);
    $('preview-stop').addEventListener('click', stopPreview);
    $('preview-protocol').addEventListener('change', startPreview);
    $('detail-close').addEventListener('click', () => {
      stopPreview();
      $('detail').hidden = true;
      state.selected = null;
    });
    // The API may be on the admin port only (api.listener: admin): the console then has to
    // be opened there.
    const health = await fetch(API + '/health', { cache: 'no-store' }).catch(() => null);
    if (!health || health.status === 404) {
      notice('The API is not served on this port (api.listener: admin?): open /admin/ on the admin port.');
      return;
    }
    if (state.token) {
      try {
        await start();
        return;
      } catch (_) {
        // Expired or from a previous server process: log in again.
      }
    }
    showLogin('');
  }

  boot();
})();
