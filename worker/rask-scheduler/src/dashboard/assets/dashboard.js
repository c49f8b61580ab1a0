// rask's dashboard: reads the scheduler's updates from /status/events (server-sent events, one
// `update` event about every half second) and draws the task stream, the progress per task prefix,
// the task graph, the cluster charts and the workers table. No framework and no build step: the scheduler serves this file as is.
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
  // As Dask's task stream: input transfers red, failed tasks black.
  const TRANSFER_COLOUR = '#e0403a';
  const ERRED_COLOUR = '#1d2330';
  // The cluster charts keep one point per update for this long (ms).
  const HISTORY_MS = 1800000;
  const WORKER_SERIES = [
    { key: 'workers', name: 'workers', colour: '#3b6fd4' },
    { key: 'threads', name: 'threads', colour: '#9fb9ec' },
    { key: 'target', name: 'adaptive target', colour: '#d3873b', dashed: true },
  ];
  // The graph panel: node states as the scheduler numbers them, and their colours (Dask's graph
  // panel: waiting grey, processing green, in memory coloured, erred red, released faded).
  const GRAPH_STATES = [
    { key: 'released', colour: '#c9ced8' },
    { key: 'waiting', colour: '#8a909b' },
    { key: 'processing', colour: '#2e8b57' },
    { key: 'memory', colour: '#3b6fd4' },
    { key: 'erred', colour: '#d33b3b' },
  ];
  const GRAPH_H = 320;
  // Above this many edges only the nodes are drawn.
  const GRAPH_MAX_EDGES = 20000;
  const SCHED_CPU_SERIES = [{ key: 'schedCpu', name: 'scheduler CPU (% of a core)', colour: '#8a4fd3', fmt: (v) => `${Math.round(v)}%` }];
  const SCHED_MEMORY_SERIES = [{ key: 'schedRss', name: 'scheduler memory (RSS)', colour: '#d34f8a', fmt: bytes }];
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
    bars: [], // {w, lane, p, fetch, start, stop, erred}, times in ms on the scheduler's clock
    history: [], // cluster figures, one point per update: {t, workers, threads, target, ...}
    target: null, // the last adaptive target received
    serverNow: 0, // the scheduler's clock (ms) at the last update
    receivedAt: 0, // performance.now() when it arrived
    lastMessage: 0,
    updates: 0,
    // Sizes of the updates received (characters of JSON), for tests and the curious.
    bytes: { last: 0, max: 0, total: 0, withGraph: 0 },
    connection: 'connecting',
    graph: emptyGraph(),
  };

  function emptyGraph() {
    // nodes: prefix id per node; edges: flat [from, to, ...]; states: a digit per node;
    // layers: node ids by dependency depth (the layout), made once per structure.
    return { version: 0, nodes: [], edges: [], states: new Uint8Array(0), tooLarge: null, layers: [] };
  }

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
    s.graph = emptyGraph();
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
    if (u.graph) applyGraph(u.graph);
    addHistory(u);
    renderSummary(u);
    renderWorkers(u.workers);
    renderProgress(u.progress);
    drawStream();
    drawCharts();
    drawGraph();
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
      schedCpu: u.scheduler ? u.scheduler.cpu_percent : null,
      schedRss: u.scheduler ? u.scheduler.rss : null,
    });
    const cutoff = s.serverNow - HISTORY_MS;
    let drop = 0;
    while (drop < s.history.length && s.history[drop].t < cutoff) drop += 1;
    if (drop) s.history.splice(0, drop);
  }

  function drawCharts() {
    drawChart($('chart-workers'), $('legend-workers'), WORKER_SERIES);
    drawChart($('chart-tasks'), $('legend-tasks'), TASK_SERIES);
    drawChart($('chart-sched-cpu'), $('legend-sched-cpu'), SCHED_CPU_SERIES);
    drawChart($('chart-sched-memory'), $('legend-sched-memory'), SCHED_MEMORY_SERIES);
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
    const fmt = series[0].fmt || String;
    legend.replaceChildren(...series.map((se) => el('span', { class: 'key', 'data-series': se.key, 'data-value': last && last[se.key] != null ? last[se.key] : '' },
      el('span', { class: 'swatch', style: `background:${se.colour};margin-left:0` }),
      `${se.name} ${last && last[se.key] != null ? fmt(last[se.key]) : '–'}`)));
    if (h.length < 1) return;
    const left = series[0].fmt ? 64 : 40;
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
    g.fillText(fmt(max), 4, y(max));
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
    for (const [w, p, startAgo, stopAgo, erred, transfer] of events) {
      const start = s.serverNow - startAgo;
      const stop = s.serverNow - stopAgo;
      // Fetching its inputs ended when it started.
      const fetch = start - (transfer || 0);
      const n = s.threads.get(w) || 1;
      let lanes = s.lanes.get(w);
      if (!lanes || lanes.length !== n) {
        lanes = new Array(n).fill(-Infinity);
        s.lanes.set(w, lanes);
      }
      // The first thread free when the task started; else the one that freed up first.
      let lane = lanes.findIndex((end) => end <= fetch + 0.05);
      if (lane < 0) lane = lanes.indexOf(Math.min(...lanes));
      lanes[lane] = Math.max(lanes[lane], stop);
      s.bars.push({ w, lane, p, fetch, start, stop, erred: erred === 1 });
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
    const first = s.bars.length ? s.bars[0].fetch : now;
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
    let transfers = 0;
    let erred = 0;
    for (const b of visible) {
      const t = top.get(b.w);
      if (t === undefined) continue;
      const y = t + b.lane * (LANE_H + LANE_GAP);
      if (b.fetch < b.start) {
        const f0 = Math.max(LABEL_W, x(b.fetch));
        g.fillStyle = TRANSFER_COLOUR;
        g.fillRect(f0, y, Math.max(1, x(b.start) - f0), LANE_H);
        transfers += 1;
      }
      const x0 = Math.max(LABEL_W, x(b.start));
      const x1 = Math.max(x0 + 1, x(b.stop));
      g.fillStyle = b.erred ? ERRED_COLOUR : colour(b.p);
      g.fillRect(x0, y, x1 - x0, LANE_H);
      if (b.erred) erred += 1;
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
    if (transfers) legend.push(el('span', { class: 'key' }, el('span', { class: 'swatch', style: `background:${TRANSFER_COLOUR};margin-left:0` }), 'transfer (fetching inputs)'));
    if (erred) legend.push(el('span', { class: 'key' }, el('span', { class: 'swatch', style: `background:${ERRED_COLOUR};margin-left:0` }), 'erred'));
    $('stream-legend').replaceChildren(...legend);
  }

  // ----- the graph -----------------------------------------------------------------------------

  function applyGraph(g) {
    if (g.nodes) {
      const states = new Uint8Array(g.nodes.length);
      for (let i = 0; i < states.length; i += 1) states[i] = g.states.charCodeAt(i) - 48;
      s.graph = { version: g.version, nodes: g.nodes, edges: g.edges, states, tooLarge: g.too_large ?? null, layers: layout(g.nodes.length, g.edges) };
    } else if (g.version === s.graph.version && g.changes) {
      const st = s.graph.states;
      for (let i = 0; i + 1 < g.changes.length; i += 2) {
        if (g.changes[i] < st.length) st[g.changes[i]] = g.changes[i + 1];
      }
    }
  }

  /** Nodes in layers by dependency depth (a node one right of its deepest input), each layer in
   *  the order a depth-first walk from the graph's results back through the inputs meets them:
   *  the inputs of one task sit together, level with it (a reduction tree stays a tree). */
  function layout(n, edges) {
    const indeg = new Uint32Array(n);
    const outdeg = new Uint32Array(n);
    const first = new Int32Array(n).fill(-1);
    const next = new Int32Array(edges.length / 2);
    const inputs = Array.from({ length: n }, () => []);
    for (let e = 0; e < edges.length / 2; e += 1) {
      const [a, b] = [edges[2 * e], edges[2 * e + 1]];
      next[e] = first[a];
      first[a] = e;
      indeg[b] += 1;
      outdeg[a] += 1;
      inputs[b].push(a);
    }
    const depth = new Uint32Array(n);
    const queue = [];
    for (let v = 0; v < n; v += 1) if (indeg[v] === 0) queue.push(v);
    for (let q = 0; q < queue.length; q += 1) {
      const a = queue[q];
      for (let e = first[a]; e >= 0; e = next[e]) {
        const b = edges[2 * e + 1];
        depth[b] = Math.max(depth[b], depth[a] + 1);
        indeg[b] -= 1;
        if (indeg[b] === 0) queue.push(b);
      }
    }
    const rank = new Int32Array(n).fill(-1);
    let k = 0;
    const stack = [];
    for (let root = 0; root < n; root += 1) {
      if (outdeg[root] !== 0) continue;
      stack.push(root);
      while (stack.length) {
        const v = stack.pop();
        if (rank[v] >= 0) continue;
        rank[v] = k;
        k += 1;
        for (let i = inputs[v].length - 1; i >= 0; i -= 1) stack.push(inputs[v][i]);
      }
    }
    const layers = [];
    for (let v = 0; v < n; v += 1) (layers[depth[v]] ||= []).push(v);
    for (const layer of layers) if (layer) layer.sort((a, b) => rank[a] - rank[b] || a - b);
    return layers.filter(Boolean);
  }

  function graphCounts() {
    const n = [0, 0, 0, 0, 0];
    for (const st of s.graph.states) n[st] += 1;
    return n;
  }

  function drawGraph() {
    const g = s.graph;
    const canvas = $('graph');
    const message = $('graph-message');
    const counts = graphCounts();
    $('graph-summary').textContent = g.nodes.length ? `${g.nodes.length} tasks, ${g.edges.length / 2} dependencies` : '';
    if (g.tooLarge !== null || !g.nodes.length) {
      message.textContent = g.tooLarge !== null ? `graph too large to draw (${g.tooLarge} tasks)` : 'no graph';
      message.hidden = false;
      canvas.hidden = true;
      $('graph-legend').replaceChildren();
      return;
    }
    message.hidden = true;
    canvas.hidden = false;
    $('graph-legend').replaceChildren(...GRAPH_STATES.map((st, i) => el('span', { class: 'key', 'data-state': st.key, 'data-count': counts[i] },
      el('span', { class: 'swatch', style: `background:${st.colour};margin-left:0` }), `${st.key} ${counts[i]}`)));
    const width = Math.max(200, canvas.clientWidth);
    const height = GRAPH_H;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.height = `${height}px`;
    }
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    // A layer taller than the panel wraps into several columns of at most `perCol` nodes, dealt
    // across them in turn, so each node stays about level with the tasks it feeds.
    const pad = 8;
    const perCol = Math.max(1, Math.floor((height - 2 * pad) / 5));
    const cols = g.layers.reduce((acc, l) => acc + Math.ceil(l.length / perCol), 0);
    const dx = (width - 2 * pad) / Math.max(1, cols);
    const xs = new Float32Array(g.nodes.length);
    const ys = new Float32Array(g.nodes.length);
    let col = 0;
    let dyMin = Infinity;
    for (const layer of g.layers) {
      const wide = Math.ceil(layer.length / perCol);
      const rows = Math.ceil(layer.length / wide);
      const dy = (height - 2 * pad) / rows;
      dyMin = Math.min(dyMin, dy);
      layer.forEach((v, i) => {
        xs[v] = pad + (col + (i % wide) + 0.5) * dx;
        ys[v] = pad + (Math.floor(i / wide) + 0.5) * dy;
      });
      col += wide;
    }
    const r = Math.max(1.2, Math.min(6, 0.38 * Math.min(dx, dyMin)));
    if (g.edges.length / 2 <= GRAPH_MAX_EDGES) {
      ctx.strokeStyle = 'rgba(107, 115, 133, 0.25)';
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let e = 0; e < g.edges.length; e += 2) {
        ctx.moveTo(xs[g.edges[e]], ys[g.edges[e]]);
        ctx.lineTo(xs[g.edges[e + 1]], ys[g.edges[e + 1]]);
      }
      ctx.stroke();
    }
    // One path per state: a few thousand nodes draw in a few fills.
    GRAPH_STATES.forEach((st, code) => {
      ctx.fillStyle = st.colour;
      ctx.beginPath();
      for (let v = 0; v < g.nodes.length; v += 1) {
        if (g.states[v] !== code) continue;
        ctx.moveTo(xs[v] + r, ys[v]);
        ctx.arc(xs[v], ys[v], r, 0, 2 * Math.PI);
      }
      ctx.fill();
    });
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
      const n = ev.data.length;
      s.bytes = { last: n, max: Math.max(s.bytes.max, n), total: s.bytes.total + n, withGraph: u.graph && u.graph.nodes ? Math.max(s.bytes.withGraph, n) : s.bytes.withGraph };
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
    transfers() {
      return s.bars.filter((b) => b.fetch < b.start).length;
    },
    updates: () => s.updates,
    bytes: () => ({ ...s.bytes, updates: s.updates }),
    cluster: () => s.history[s.history.length - 1] || null,
    connection: () => s.connection,
    graph: () => {
      const n = graphCounts();
      return {
        version: s.graph.version,
        nodes: s.graph.nodes.length,
        edges: s.graph.edges.length / 2,
        layers: s.graph.layers.length,
        tooLarge: s.graph.tooLarge,
        ...Object.fromEntries(GRAPH_STATES.map((st, i) => [st.key, n[i]])),
      };
    },
  };

  connect();
})();
