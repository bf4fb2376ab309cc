// retain_ros operator console: renders the server's view (websocket), sends actions (HTTP POST).
// The server strips everything that would reveal the merge setting while the evaluation is
// blind; this page only shows what it receives.
'use strict';

const params = new URLSearchParams(window.location.search);
const token = params.get('token');
const $ = (id) => document.getElementById(id);
window.consoleState = null;   // the last view (tests read it)
let current = null;           // the running episode's start reply
let busy = false;

function withToken(path) {
  return token ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : path;
}

function headers() {
  const h = {'Content-Type': 'application/json'};
  if (token) h['X-Console-Token'] = token;
  return h;
}

function text(id, value) { $(id).textContent = (value === null || value === undefined || value === '') ? '-' : String(value); }

function describe(message) {
  if (message === null || message === undefined) return '';
  if (typeof message !== 'object') return String(message);
  // scalar fields only (episode id, setting, outcome, duration, ...); nested data stays out
  return Object.entries(message).filter(([, v]) => v !== null && v !== undefined && typeof v !== 'object')
    .map(([k, v]) => k + ': ' + v).join(', ');
}

function pct(x) { return (x === null || x === undefined) ? '-' : Math.round(100 * x) + '%'; }

function renderCounts(view) {
  const ev = view.evaluation || {};
  const counts = ev.counts;
  const hide = view.blind || !counts;
  $('counts-hidden').classList.toggle('hidden', !view.blind);
  text('done', ev.episodes_done || 0);
  $('counts-table').classList.toggle('hidden', hide);
  $('plot').classList.toggle('hidden', hide);
  const body = $('counts-table').querySelector('tbody');
  body.innerHTML = '';
  const plot = $('plot');
  plot.innerHTML = '';
  if (hide) return;
  const labels = Object.keys(counts);
  for (const label of labels) {
    const c = counts[label];
    const tr = document.createElement('tr');
    for (const v of [label, c.n, c.successes, pct(c.rate), pct(c.ci95[0]) + ' - ' + pct(c.ci95[1])]) {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  drawPlot(plot, labels, counts);
}

function svg(tag, attrs, content) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (content !== undefined) el.textContent = content;
  return el;
}

function drawPlot(plot, labels, counts) {
  const W = 460, H = 170, left = 36, bottom = 40, top = 8;
  const y = (p) => top + (1 - p) * (H - top - bottom);
  for (const p of [0, 0.5, 1]) {
    plot.appendChild(svg('line', {x1: left, x2: W, y1: y(p), y2: y(p), stroke: '#e5e7eb'}));
    plot.appendChild(svg('text', {x: 2, y: y(p) + 4, 'font-size': 11, fill: '#6b7280'}, Math.round(100 * p) + '%'));
  }
  const step = (W - left) / Math.max(labels.length, 1);
  labels.forEach((label, i) => {
    const c = counts[label];
    const x = left + step * (i + 0.5);
    plot.appendChild(svg('line', {x1: x, x2: x, y1: y(c.ci95[0]), y2: y(c.ci95[1]), stroke: '#2563eb', 'stroke-width': 2}));
    if (c.rate !== null) plot.appendChild(svg('circle', {cx: x, cy: y(c.rate), r: 4, fill: '#2563eb'}));
    plot.appendChild(svg('text', {x: x, y: H - bottom + 16, 'font-size': 11, 'text-anchor': 'middle'}, label));
    plot.appendChild(svg('text', {x: x, y: H - bottom + 30, 'font-size': 10, 'text-anchor': 'middle', fill: '#6b7280'}, 'n=' + c.n));
  });
}

function renderSequential(view) {
  const seq = (view.evaluation || {}).sequential;
  const body = $('seq-table').querySelector('tbody');
  body.innerHTML = '';
  if (!seq) {
    text('seq-summary', (view.evaluation || {}).finished ? 'finished: ' + view.evaluation.finished : 'fixed schedule (no sequential test)');
    text('seq-stopped', '');
    $('seq-table').classList.add('hidden');
    return;
  }
  $('seq-table').classList.remove('hidden');
  text('seq-summary', seq.summary);
  const bits = [];
  if (seq.stopped) bits.push('stopped: ' + seq.stopped);
  if (seq.dropped && seq.dropped.length) bits.push('dropped: ' + seq.dropped.join(', '));
  if (seq.design) bits.push('family-wise error ' + seq.design.level + ', power ' + seq.design.power + ' at a gap of ' + seq.design.gap + ', budget ' + seq.design.budget + ' per setting');
  text('seq-stopped', bits.join(' | '));
  for (const c of seq.comparisons || []) {
    const tr = document.createElement('tr');
    const cells = [c.a + ' vs ' + c.b, c.pairs, Number(c.e_value).toPrecision(3), Number(c.p_value).toPrecision(3), c.decision];
    for (const v of cells) { const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
    body.appendChild(tr);
  }
}

function render(view) {
  window.consoleState = view;
  const ev = view.evaluation || {};
  const st = view.state || {};
  text('node', view.node);
  $('link').textContent = view.connected ? 'node connected' : 'waiting for the node';
  $('link').classList.toggle('ok', !!view.connected);
  $('blind').classList.toggle('hidden', !view.blind);
  const finished = ev.finished ? 'finished: ' + ev.finished : null;
  text('next', finished || ev.next || (ev.running ? '(running)' : null));
  const running = ev.running || null;
  if (!running) current = null;
  const setting = ev.setting || (current && current.setting);
  text('running', running ? running + (setting ? ' (' + setting + ')' : '') : null);
  text('instruction', current ? current.instruction : null);
  const tag = $('tag');
  if (document.activeElement !== tag && view.tag !== null && view.tag !== undefined) tag.value = view.tag;
  $('btn-start').disabled = busy || !!running || !!ev.finished;
  for (const id of ['btn-success', 'btn-failure', 'btn-abort']) $(id).disabled = busy || !running;
  const state = $('state');
  state.textContent = st.message || '-';
  state.className = 'state ' + (st.level || '');
  text('lifecycle', st.lifecycle_state);
  text('fingerprint', st.fingerprint);
  text('weights', view.blind ? 'hidden (blind evaluation)' : st.weights);
  const ck = st.checkpoints;
  text('checkpoints', ck ? Object.entries(ck).filter(([, v]) => typeof v === 'string' || Array.isArray(v))
    .map(([k, v]) => k + ': ' + (Array.isArray(v) ? v.join(', ') : v)).join(' | ') : null);
  renderCounts(view);
  renderSequential(view);
  const last = view.last;
  if (last) {
    $('last').textContent = last.action + (last.ok ? ' - done: ' : ' - refused: ') + describe(last.message);
    $('last').className = 'last ' + (last.ok ? '' : 'fail');
  }
  const list = $('actions');
  list.innerHTML = '';
  for (const a of view.actions || []) {
    const li = document.createElement('li');
    li.textContent = a.time + ' ' + a.action + (a.ok ? '' : ' (refused)') + ' from ' + a.client;
    list.appendChild(li);
  }
  text('camera-topic', view.camera);
}

async function post(path, body) {
  busy = true;
  if (window.consoleState) render(window.consoleState);
  try {
    const r = await fetch(withToken(path), {method: 'POST', headers: headers(), body: JSON.stringify(body)});
    const result = await r.json();
    if (body.action === 'start' && result.ok && typeof result.message === 'object') current = result.message;
    return result;
  } finally {
    busy = false;
    if (window.consoleState) render(window.consoleState);
  }
}

function act(action) { if (!busy) return post('/api/action', {action: action}); }

document.querySelectorAll('button[data-action]').forEach((b) => b.addEventListener('click', () => act(b.dataset.action)));
$('tag-form').addEventListener('submit', (e) => { e.preventDefault(); post('/api/tag', {tag: $('tag').value}); $('tag').blur(); });

const KEYS = {s: 'start', y: 'success', ArrowRight: 'success', n: 'failure', ArrowLeft: 'failure', a: 'abort'};
document.addEventListener('keydown', (e) => {
  if (e.target && (e.target.tagName === 'INPUT' || e.target.tagName === 'TEXTAREA')) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const action = KEYS[e.key];
  if (!action) return;
  const button = document.querySelector('button[data-action="' + action + '"]');
  if (button && button.disabled) return;
  e.preventDefault();
  act(action);
});

function connect() {
  const scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
  const ws = new WebSocket(scheme + window.location.host + withToken('/ws'));
  ws.onmessage = (m) => render(JSON.parse(m.data));
  ws.onclose = () => { $('link').textContent = 'console disconnected; retrying'; $('link').classList.remove('ok'); setTimeout(connect, 1000); };
}

let cameraLoading = false;
setInterval(() => {
  const view = window.consoleState;
  if (!view || !view.camera || cameraLoading) return;
  cameraLoading = true;
  const img = $('camera');
  img.onload = img.onerror = () => { cameraLoading = false; };
  img.src = withToken('/camera.jpg?t=' + Date.now());
}, 500);

connect();
