// rask's dashboard: reads the scheduler's updates from /status/events (server-sent events, one
// `update` event about every half second) and draws the task stream, the progress per task prefix
// and the workers table. No framework and no build step: the scheduler serves this file as is.
'use strict';

(() => {
  // Task-stream bars are kept this long (ms) and at most this many.
  const KEEP_MS = 300000;
  const MAX_BARS = 20000;
  // With no update for this long, the page says it lost the scheduler.
  const STALE_MS = 3000;
  const LANE_H = 12;
  const LANE_GAP = 2;
  const GROUP_GAP = 8;
  const LABEL_W = 140;
  const AXIS_H = 16;
  // The cluster charts keep one point per update for this long (ms).
  const HISTORY_MS = 1800000;
  const WORKER_SERIES = [
    { key: 'workers', name: 'workers', colour: '#3b6fd4' },
    { key: 'threads', name: 'threads', colour: '#9fb9ec' },
    { key: 'target', name: 'adaptive target', colour: '#d3873b', dashed: true },
  ];
  const TASK_SERIES = [
    { key: 'processing', name: 'processing', colour: '#2e8b57' },
    { key: 'queued', name: 'queued', colour: '#d3873b' },
    { key: 'waiting', name: 'waiting for inputs', colour: '#a0a4ab' },
    { key: 'memory', name: 'in memory', colour: '#3b6fd4' },
  ];

  const s = {
    startedAt: null,
    prefixes: new Map(), // prefix id -> name
    workers: [], // the current workers table rows
    names: new Map(), // worker id -> name, including workers gone
    threads: new Map(), // worker id -> threads, including workers gone
    lanes: new Map(), // worker id -> per-thread end time of its last bar (ms)
    bars: [], // {w, lane, p, start, stop, erred}, times in ms on the scheduler's clock
    history: [], // cluster figures, one point per update: {t, workers, threads, target, ...}
    target: null, // the last adaptive target received
    serverNow: 0, // the scheduler's clock (ms) at the last update
    receivedAt: 0, // performance.now() when it arrived
    lastMessage: 0,
    updates: 0,
    connection: 'connecting',
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'style') e.style.cssText = v;
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else e[k] = v;
    }
    for (const c of children) e.append(c);
    return e;
  }

  function bytes(n) {
    if (!n) return '0 B';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
  }

  const colours = new Map();
  function colour(prefix) {
    const name = s.prefixes.get(prefix) || String(prefix);
    let c = colours.get(name);
    if (!c) {
      let h = 2166136261;
      for (let i = 0; i < name.length; i += 1) {
        h ^= name.charCodeAt(i);
        h = Math.imul(h, 16777619) >>> 0;
      }
      c = `hsl(${h % 360}, 62%, ${48 + ((h >>> 9) % 16)}%)`;
      colours.set(name, c);
    }
    return c;
  }

  function setConnection(state, why) {
    s.connection = state;
    const c = $('connection');
    c.dataset.state = state;
    c.textContent = state === 'live' ? 'live' : state === 'lost' ? `scheduler unreachable${why ? ` (${why})` : ''}; retrying` : 'connecting';
  }

  function reset() {
    s.prefixes.clear();
    s.lanes.clear();
    s.bars = [];
  }

  // ----- updates -------------------------------------------------------------------------------

  function apply(u) {
    if (s.startedAt !== u.started_at) {
      // A new scheduler (or the first update): nothing of the old one's stream applies.
      reset();
      s.history = [];
      s.target = null;
      s.startedAt = u.started_at;
    }
    for (const [id, name] of u.prefixes) s.prefixes.set(id, name);
    s.serverNow = u.now * 1000;
    s.receivedAt = performance.now();
    s.lastMessage = Date.now();
    s.updates += 1;
    s.workers = u.workers;
    for (const w of u.workers) {
      s.names.set(w.id, w.name);
      s.threads.set(w.id, Math.max(1, w.nthreads));
    }
    addBars(u.stream);
    addHistory(u);
    renderSummary(u);
    renderWorkers(u.workers);
    renderProgress(u.progress);
    drawStream();
    drawCharts();
  }

  function addHistory(u) {
    if (u.cluster.adaptive_target !== null && u.cluster.adaptive_target !== undefined) s.target = u.cluster.adaptive_target;
    s.history.push({
      t: s.serverNow,
      workers: u.workers.length,
      threads: u.workers.reduce((a, w) => a + w.nthreads, 0),
      target: s.target,
      processing: u.cluster.processing,
      queued: u.cluster.queued,
      waiting: u.cluster.waiting,
      memory: u.cluster.memory,
    });
    const cutoff = s.serverNow - HISTORY_MS;
    let drop = 0;
    while (drop < s.history.length && s.history[drop].t < cutoff) drop += 1;
    if (drop) s.history.splice(0, drop);
  }

  function drawCharts() {
    drawChart($('chart-workers'), $('legend-workers'), WORKER_SERIES);
    drawChart($('chart-tasks'), $('legend-tasks'), TASK_SERIES);
  }

  /** A line chart of `series` over the history, on one axis from 0. */
  function drawChart(canvas, legend, series) {
    const width = Math.max(200, canvas.clientWidth);
    const height = 140;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.height = `${height}px`;
    }
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const h = s.history;
    const last = h.length ? h[h.length - 1] : null;
    legend.replaceChildren(...series.map((se) => el('span', { class: 'key' },
      el('span', { class: 'swatch', style: `background:${se.colour};margin-left:0` }),
      `${se.name} ${last && last[se.key] !== null ? last[se.key] : '–'}`)));
    if (h.length < 1) return;
    const left = 40;
    const bottom = height - AXIS_H;
    const t1 = h[h.length - 1].t;
    const t0 = Math.min(h[0].t, t1 - 10000);
    const max = Math.max(1, ...h.flatMap((p) => series.map((se) => p[se.key] || 0)));
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - 8);
    const y = (v) => bottom - (v / max) * (bottom - 8);
    g.strokeStyle = '#dde1e8';
    g.beginPath();
    g.moveTo(left, y(max));
    g.lineTo(width - 8, y(max));
    g.moveTo(left, bottom);
    g.lineTo(width - 8, bottom);
    g.stroke();
    g.fillStyle = '#6b7385';
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.fillText(String(max), 4, y(max));
    g.fillText('0', 4, bottom);
    g.textBaseline = 'top';
    g.fillText(`−${Math.round((t1 - t0) / 1000)} s`, left, bottom + 3);
    g.fillText('now', width - 30, bottom + 3);
    for (const se of series) {
      g.strokeStyle = se.colour;
      g.lineWidth = 2;
      g.setLineDash(se.dashed ? [5, 3] : []);
      g.beginPath();
      let started = false;
      for (const p of h) {
        const v = p[se.key];
        if (v === null || v === undefined) {
          started = false;
          continue;
        }
        if (started) g.lineTo(x(p.t), y(v));
        else g.moveTo(x(p.t), y(v));
        started = true;
      }
      g.stroke();
    }
    g.setLineDash([]);
    g.lineWidth = 1;
  }

  function addBars(events) {
    for (const [w, p, startAgo, stopAgo, erred] of events) {
      const start = s.serverNow - startAgo;
      const stop = s.serverNow - stopAgo;
      const n = s.threads.get(w) || 1;
      let lanes = s.lanes.get(w);
      if (!lanes || lanes.length !== n) {
        lanes = new Array(n).fill(-Infinity);
        s.lanes.set(w, lanes);
      }
      // The first thread free when the task started; else the one that freed up first.
      let lane = lanes.findIndex((end) => end <= start + 0.05);
      if (lane < 0) lane = lanes.indexOf(Math.min(...lanes));
      lanes[lane] = Math.max(lanes[lane], stop);
      s.bars.push({ w, lane, p, start, stop, erred: erred === 1 });
    }
    const cutoff = s.serverNow - KEEP_MS;
    let drop = 0;
    while (drop < s.bars.length && (s.bars[drop].stop < cutoff || s.bars.length - drop > MAX_BARS)) drop += 1;
    if (drop) s.bars.splice(0, drop);
  }

  function renderSummary(u) {
    const threads = u.workers.reduce((a, w) => a + w.nthreads, 0);
    const processing = u.workers.reduce((a, w) => a + w.processing, 0);
    const memory = u.workers.reduce((a, w) => a + w.managed, 0);
    $('summary').textContent = `${u.workers.length} workers, ${threads} threads, ${processing} tasks processing, ${bytes(memory)} of results`;
    $('worker-count').textContent = `(${u.workers.length})`;
  }

  function renderWorkers(workers) {
    const scale = Math.max(1, ...workers.map((w) => Math.max(w.memory_limit, w.rss, w.managed + w.spilled)));
    const rows = workers
      .slice()
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((w) => {
        const unmanaged = Math.max(0, w.rss - w.managed);
        const pct = (n) => `${((100 * n) / scale).toFixed(2)}%`;
        const bar = el('div', { class: 'membar', title: `managed ${bytes(w.managed)}, RSS ${bytes(w.rss)}, spilled ${bytes(w.spilled)}, limit ${w.memory_limit ? bytes(w.memory_limit) : 'none'}` },
          el('span', { class: 'managed', style: `width:${pct(w.managed)}` }),
          el('span', { class: 'unmanaged', style: `width:${pct(unmanaged)}` }),
          el('span', { class: 'spilled', style: `width:${pct(w.spilled)}` }));
        if (w.memory_limit) bar.append(el('span', { class: 'limit', style: `left:calc(${pct(w.memory_limit)} - 2px)` }));
        return el('tr', { 'data-worker': w.name, 'data-status': w.status, 'data-managed': w.managed, 'data-rss': w.rss, 'data-spilled': w.spilled, 'data-cpu': w.cpu_percent == null ? '' : w.cpu_percent },
          el('td', {}, w.name),
          el('td', {}, w.address),
          el('td', {}, w.status),
          el('td', { class: 'num' }, w.cpu_percent == null ? '–' : `${Math.round(w.cpu_percent)}%`),
          el('td', { class: 'num' }, String(w.nthreads)),
          el('td', { class: 'num' }, String(w.processing)),
          el('td', { class: 'num' }, String(w.keys)),
          el('td', { class: 'num' }, bytes(w.managed)),
          el('td', { class: 'num' }, bytes(w.spilled)),
          el('td', { class: 'num' }, `${w.rss ? bytes(w.rss) : '–'} / ${w.memory_limit ? bytes(w.memory_limit) : 'no limit'}`),
          el('td', {}, bar),
          el('td', {}, w.resources || '–'));
      });
    $('workers').tBodies[0].replaceChildren(...rows);
  }

  function renderProgress(progress) {
    const box = $('progress');
    if (!progress.length) {
      box.replaceChildren(el('p', { class: 'empty' }, 'no computation'));
      return;
    }
    const rows = progress.map((r) => {
      const name = s.prefixes.get(r.id) || `prefix ${r.id}`;
      const total = r.waiting + r.processing + r.memory + r.erred + r.released;
      const done = total - r.waiting - r.processing;
      const pct = (n) => `${total ? ((100 * n) / total).toFixed(2) : 0}%`;
      const c = colour(r.id);
      const bar = el('div', { class: 'bar', title: `waiting ${r.waiting}, processing ${r.processing}, in memory ${r.memory}, erred ${r.erred}, released ${r.released}` },
        el('span', { style: `width:${pct(r.memory)};background:${c}` }),
        el('span', { style: `width:${pct(r.released)};background:${c};opacity:.5` }),
        el('span', { style: `width:${pct(r.erred)};background:var(--erred)` }),
        el('span', { style: `width:${pct(r.processing)};background:${c};opacity:.2` }));
      const pctDone = total ? Math.floor((100 * done) / total) : 100;
      const count = `${done} / ${total} (${pctDone}%)${r.erred ? `, ${r.erred} erred` : ''}`;
      return el('div', { class: 'prefix', 'data-prefix': name, 'data-done': done, 'data-total': total, 'data-erred': r.erred },
        el('span', { class: 'name', title: name }, name), bar, el('span', { class: 'count' }, count));
    });
    box.replaceChildren(...rows);
  }

  // ----- the task stream -----------------------------------------------------------------------

  function windowMs(now) {
    const choice = $('stream-window').value;
    if (choice !== 'auto') return Number(choice) * 1000;
    const first = s.bars.length ? s.bars[0].start : now;
    return Math.min(KEEP_MS, Math.max(2000, (now - first) * 1.05));
  }

  function drawStream() {
    const canvas = $('stream');
    const now = s.serverNow + (s.receivedAt ? performance.now() - s.receivedAt : 0);
    const span = windowMs(now);
    const from = now - span;
    const visible = s.bars.filter((b) => b.stop >= from);
    // Rows: the current workers, then workers gone that still have bars in view.
    const ids = s.workers.map((w) => w.id);
    for (const b of visible) if (!ids.includes(b.w)) ids.push(b.w);
    const current = new Set(s.workers.map((w) => w.id));
    ids.sort((a, b) => (current.has(b) - current.has(a)) || (s.names.get(a) || '').localeCompare(s.names.get(b) || ''));
    const top = new Map();
    let y = 4;
    for (const id of ids) {
      top.set(id, y);
      y += (s.threads.get(id) || 1) * (LANE_H + LANE_GAP) + GROUP_GAP;
    }
    const height = Math.max(40, y + AXIS_H);
    const width = Math.max(200, canvas.clientWidth);
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.height = `${height}px`;
    }
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const plotW = width - LABEL_W - 8;
    const x = (t) => LABEL_W + ((t - from) / span) * plotW;
    g.font = '12px system-ui, sans-serif';
    g.textBaseline = 'middle';
    for (const id of ids) {
      const t = top.get(id);
      const n = s.threads.get(id) || 1;
      g.fillStyle = '#f0f2f5';
      g.fillRect(LABEL_W, t, plotW, n * (LANE_H + LANE_GAP) - LANE_GAP);
      g.fillStyle = current.has(id) ? '#1d2330' : '#9aa0ab';
      const label = `${s.names.get(id) || `worker ${id}`}${current.has(id) ? '' : ' (gone)'}`;
      g.fillText(label.length > 20 ? `${label.slice(0, 19)}…` : label, 4, t + (n * (LANE_H + LANE_GAP)) / 2);
    }
    const seen = new Map();
    for (const b of visible) {
      const t = top.get(b.w);
      if (t === undefined) continue;
      const x0 = Math.max(LABEL_W, x(b.start));
      const x1 = Math.max(x0 + 1, x(b.stop));
      g.fillStyle = b.erred ? '#d33b3b' : colour(b.p);
      g.fillRect(x0, t + b.lane * (LANE_H + LANE_GAP), x1 - x0, LANE_H);
      seen.set(b.p, (seen.get(b.p) || 0) + 1);
    }
    // Axis: seconds before now.
    g.fillStyle = '#6b7385';
    g.textBaseline = 'top';
    const step = [1, 2, 5, 10, 15, 30, 60, 120].find((d) => (span / 1000) / d <= 8) || 60;
    for (let ago = 0; ago * 1000 <= span; ago += step) {
      const px = x(now - ago * 1000);
      g.fillRect(px, height - AXIS_H, 1, 4);
      g.fillText(ago ? `−${ago} s` : 'now', Math.min(px - 8, width - 30), height - AXIS_H + 4);
    }
    const legend = [...seen.keys()].slice(0, 24).map((p) => el('span', { class: 'key' },
      el('span', { class: 'swatch', style: `background:${colour(p)};margin-left:0` }), s.prefixes.get(p) || String(p)));
    $('stream-legend').replaceChildren(...legend);
  }

  // ----- the connection ------------------------------------------------------------------------

  let source = null;
  function connect() {
    source = new EventSource('/status/events');
    source.addEventListener('open', () => {
      // A new subscription starts from the newest events again.
      reset();
    });
    source.addEventListener('update', (ev) => {
      let u;
      try {
        u = JSON.parse(ev.data);
      } catch (err) {
        setConnection('lost', 'bad update');
        return;
      }
      setConnection('live');
      apply(u);
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an answer that was not an event stream): try again ourselves.
        source.close();
        setTimeout(connect, 1000);
      }
      setConnection('lost', 'connection closed');
    });
  }

  setInterval(() => {
    if (s.connection === 'live' && Date.now() - s.lastMessage > STALE_MS) setConnection('lost', 'no updates');
    if (s.updates) drawStream();
  }, 250);
  $('stream-window').addEventListener('change', drawStream);

  // For tests and for looking around from the browser's console.
  window.raskDashboard = {
    barsByWorker() {
      const out = {};
      for (const b of s.bars) {
        const name = s.names.get(b.w) || String(b.w);
        out[name] = (out[name] || 0) + 1;
      }
      return out;
    },
    updates: () => s.updates,
    cluster: () => s.history[s.history.length - 1] || null,
    connection: () => s.connection,
  };

  connect();
})();
