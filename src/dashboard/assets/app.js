// The Iris dashboard. Plain JavaScript, no dependencies: JSON from /dashboard/api, live over
// Server-Sent Events (/dashboard/events). Data is only ever put into the page as text.
'use strict';

const csrf = document.querySelector('meta[name="iris-csrf"]').content;
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** An element with attributes (`class`, `data-*`, properties) and text or element children. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-') || key === 'title' || key === 'type' || key === 'placeholder') node.setAttribute(key, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  node.append(...nodes(...children));
  return node;
}

/** Children as `el` takes them (nested arrays, nothing for null/false), for replaceChildren. */
function nodes(...children) {
  return children.flat(Infinity).filter((child) => child !== undefined && child !== null && child !== false)
    .map((child) => (child instanceof Node ? child : document.createTextNode(String(child))));
}

async function get(path) {
  const response = await fetch(path, { credentials: 'same-origin' });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json', 'x-iris-csrf': csrf },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `${response.status}`);
  return answer;
}

let toastTimer = null;
function toast(text, bad = false) {
  const box = $('#toast');
  box.textContent = text;
  box.className = bad ? 'toast bad' : 'toast';
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.add('hidden'), 4000);
}

/** Runs `action`, reporting a failure instead of throwing. */
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) toast(done);
    return result;
  } catch (error) {
    toast(error.message, true);
    return null;
  }
}

const money = (usd) => (usd === null || usd === undefined ? '' : Number(usd).toFixed(4));
const age = (ms) => {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
};
const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '');
const pairName = (pair) => `${pair.caller}->${pair.target}`;

// ---------------------------------------------------------------------------------------
// Views.

let current = 'overview';
let overview = null;

function show(view) {
  current = view;
  for (const button of $$('#tabs button')) button.classList.toggle('active', button.dataset.view === view);
  for (const section of $$('main .view')) section.classList.toggle('hidden', section.id !== `view-${view}`);
  refresh(view);
}

function refresh(view) {
  switch (view) {
    case 'overview':
    case 'approvals':
      return loadOverview();
    case 'messages':
      return loadMessages();
    case 'charts':
      return loadCharts();
    case 'logs':
      return loadLogs();
    case 'config':
      return loadConfig();
    default:
      return null;
  }
}

// At most one reload per `delay` ms per kind: the first event of a quiet spell reloads at
// once, a burst after it reloads once more at the end.
const pending = new Map();
const lastRun = new Map();
function soon(key, action, delay = 60) {
  if (pending.has(key)) return;
  const wait = Math.max(0, (lastRun.get(key) || 0) + delay - performance.now());
  pending.set(key, setTimeout(() => {
    pending.delete(key);
    lastRun.set(key, performance.now());
    action();
  }, wait));
}

// --- Overview --------------------------------------------------------------------------

// Answers that arrive after a newer request's are dropped.
const latest = { overview: 0, messages: 0 };

async function loadOverview() {
  const asked = ++latest.overview;
  const data = await attempt(() => get('/dashboard/api/overview'));
  if (!data || asked !== latest.overview) return;
  overview = data;
  renderOverview();
  renderApprovals();
}

function stateOf(pair, waiting) {
  if (waiting.has(pairName(pair.pair))) return 'waiting for approval';
  return { stopped: 'asleep', spawning: 'starting', idle: 'idle', busy: 'busy', stopping: 'stopping' }[pair.state] || pair.state;
}

function renderOverview() {
  const { status, teams, pendingApprovals } = overview;
  $('#pool-live').textContent = status.live;
  $('#pool-max').textContent = status.max_processes;
  const bridges = status.bridges || [];
  $('#sessions').textContent = bridges.length ? `${bridges.length} Claude Code session(s) connected` : '';
  const cards = $('#teams');
  cards.replaceChildren(...teams.map((team) => {
    const card = el('div', { class: 'card', 'data-team': team.name },
      el('h3', {}, team.name, team.remote ? el('span', { class: 'tag' }, 'remote') : el('span', { class: 'tag' }, 'local')),
      el('p', { class: 'muted' }, team.description || ''),
      el('p', { class: 'path' }, team.remote ? `${team.remote}:${team.path}` : team.path),
      el('p', { class: 'muted' }, `permissions: ${team.grantPermission}${team.model ? ` · model ${team.model}` : ''}`));
    if (team.color) card.style.borderLeftColor = team.color;
    return card;
  }));
  const waiting = new Set(pendingApprovals.map((a) => `${a.caller}->${a.target}`));
  const filter = $('#filter-team');
  const chosen = filter.value;
  filter.replaceChildren(el('option', { value: '' }, 'any'), ...teams.map((t) => el('option', { value: t.name }, t.name)));
  filter.value = chosen;
  const rows = status.pairs.map((pair) => {
    const name = pairName(pair.pair);
    const state = stateOf(pair, waiting);
    const actions = el('td', { class: 'actions' },
      button('wake', () => pairAction('wake', pair.pair)),
      button('sleep', () => pairAction('sleep', pair.pair)),
      confirmButton('reboot', `reboot ${name}`, () => pairAction('reboot', pair.pair)),
      confirmButton('delete', `delete ${name}`, () => pairAction('delete', pair.pair)),
      button('fork', () => forkCommand(pair.pair)));
    return el('tr', { 'data-pair': name, class: `state-${state.replace(/ /g, '-')}` },
      el('td', {}, name),
      el('td', { class: 'state' }, state),
      el('td', { class: 'pid' }, pair.pid ?? '–'),
      el('td', { class: 'mono', title: pair.session_id }, String(pair.session_id).slice(0, 8)),
      el('td', { class: 'queue' }, pair.queued),
      el('td', {}, pair.session_turns),
      el('td', {}, money(pair.total_cost_usd)),
      el('td', {}, `${age(pair.idle_ms)} ago`),
      actions);
  });
  $('#pairs tbody').replaceChildren(...rows);
  const budgets = (status.budgets || []).map((b) => el('p', {},
    `budget ${b.team}: `,
    b.usdPerDay !== null && b.usdPerDay !== undefined ? `$${money(b.usdLast24h)} of $${b.usdPerDay} in 24 h ` : '',
    b.turnsPerHour !== null && b.turnsPerHour !== undefined ? `${b.turnsLastHour} of ${b.turnsPerHour} turns in 1 h` : ''));
  $('#budgets').replaceChildren(...budgets);
  const count = pendingApprovals.length;
  $('#approval-count').textContent = count ? String(count) : '';
}

function button(label, action, extra = {}) {
  return el('button', { type: 'button', class: label, onclick: action, ...extra }, label);
}

// Buttons pressed once, waiting for the second press (by key, so a re-render keeps them).
const armed = new Map();

/** A button that asks to be pressed again within 5 s before it acts. */
function confirmButton(label, key, action) {
  const isArmed = () => (armed.get(key) || 0) > performance.now();
  const node = button(label, () => {
    if (isArmed()) {
      armed.delete(key);
      node.dataset.armed = '';
      node.textContent = label;
      action();
      return;
    }
    armed.set(key, performance.now() + 5000);
    node.dataset.armed = 'yes';
    node.textContent = `${label}? press again`;
    setTimeout(() => { if (!isArmed()) { node.dataset.armed = ''; node.textContent = label; } }, 5000);
  });
  if (isArmed()) {
    node.dataset.armed = 'yes';
    node.textContent = `${label}? press again`;
  }
  return node;
}

async function pairAction(action, pair) {
  await attempt(() => post(`/dashboard/api/pairs/${action}`, { from: pair.caller, to: pair.target }),
    `${action}: ${pairName(pair)}`);
  loadOverview();
}

async function forkCommand(pair) {
  const answer = await attempt(() => get(`/dashboard/api/fork?from=${encodeURIComponent(pair.caller)}&to=${encodeURIComponent(pair.target)}`));
  if (!answer) return;
  $('#fork-line').classList.remove('hidden');
  const input = $('#fork-command');
  input.value = answer.command;
  input.select();
  if (navigator.clipboard) navigator.clipboard.writeText(answer.command).then(() => toast('fork command copied'), () => {});
}

// --- Approvals -------------------------------------------------------------------------

/** Edit, MultiEdit and Write inputs as a diff; anything else as JSON. */
function inputView(tool, input) {
  const lines = (text, sign, cls) => String(text ?? '').split('\n').map((line) => el('div', { class: cls }, `${sign} ${line}`));
  if (tool === 'Edit' && input && typeof input === 'object') {
    return el('div', { class: 'diff' }, el('div', { class: 'file' }, input.file_path || ''),
      lines(input.old_string, '-', 'del'), lines(input.new_string, '+', 'add'));
  }
  if (tool === 'MultiEdit' && input && Array.isArray(input.edits)) {
    return el('div', { class: 'diff' }, el('div', { class: 'file' }, input.file_path || ''),
      input.edits.map((edit) => [lines(edit.old_string, '-', 'del'), lines(edit.new_string, '+', 'add')]));
  }
  if (tool === 'Write' && input && typeof input === 'object') {
    return el('div', { class: 'diff' }, el('div', { class: 'file' }, input.file_path || ''), lines(input.content, '+', 'add'));
  }
  return el('pre', { class: 'input' }, JSON.stringify(input, null, 2));
}

// What the person typed as reasons, by approval id (kept across re-renders).
const reasons = new Map();
let renderedApprovals = '';

function renderApprovals() {
  const list = overview ? overview.pendingApprovals : [];
  const person = Boolean(overview && overview.person);
  $('#person-hint').classList.toggle('hidden', person);
  $('#no-approvals').classList.toggle('hidden', list.length > 0);
  const now = overview ? overview.nowMs : Date.now();
  // The same requests: only their ages change (a re-render would take the focus and the
  // caret from a reason being typed).
  const key = `${person}|${list.map((a) => a.id).join(',')}`;
  if (key === renderedApprovals) {
    for (const approval of list) {
      const age_ = $(`[data-approval="${approval.id}"] .age`);
      if (age_) age_.textContent = age(now - approval.createdAtMs);
    }
    return;
  }
  renderedApprovals = key;
  for (const id of [...reasons.keys()]) if (!list.some((a) => a.id === id)) reasons.delete(id);
  $('#approvals').replaceChildren(...list.map((approval) => {
    const reason = el('input', { class: 'reason', placeholder: 'reason (with deny)', size: 30, value: reasons.get(approval.id) || '' });
    reason.addEventListener('input', () => reasons.set(approval.id, reason.value));
    const decide = (verdict, body) => attempt(() => post(`/dashboard/api/approvals/${approval.id}/${verdict}`, body),
      `${verdict === 'approve' ? 'allowed' : 'denied'}: ${approval.tool}`).then(loadOverview);
    return el('div', { class: 'approval card', 'data-approval': approval.id },
      el('h3', {}, `${approval.target} wants ${approval.tool}`),
      el('p', { class: 'muted' }, `for ${approval.caller} · waiting `, el('span', { class: 'age' }, age(now - approval.createdAtMs)), ` · ${approval.id.slice(0, 8)}`),
      inputView(approval.tool, approval.input),
      el('div', { class: 'buttons' },
        button('allow', () => decide('approve', {}), { disabled: !person }),
        button('allow always', () => decide('approve', { always: true }), { class: 'always', disabled: !person }),
        reason,
        button('deny', () => decide('deny', { reason: reason.value }), { disabled: !person })));
  }));
}

// --- Messages --------------------------------------------------------------------------

let selected = null;

async function loadMessages() {
  const params = new URLSearchParams();
  const team = $('#filter-team').value;
  const pair = $('#filter-pair').value.trim();
  const state = $('#filter-state').value;
  const q = $('#filter-q').value.trim();
  if (team) params.set('team', team);
  if (pair.includes('->')) {
    const [from, to] = pair.split('->');
    if (from) params.set('from', from.trim());
    if (to) params.set('to', to.trim());
  }
  if (state) params.set('state', state);
  if (q) params.set('q', q);
  const asked = ++latest.messages;
  const data = await attempt(() => get(`/dashboard/api/messages?${params}`));
  if (!data || asked !== latest.messages) return;
  $('#messages tbody').replaceChildren(...data.messages.map((m) => el('tr', {
    'data-message': m.messageId,
    class: m.messageId === selected ? 'selected' : '',
    onclick: () => openMessage(m.messageId),
  },
  el('td', {}, when(m.createdAtMs)),
  el('td', {}, `${m.fromTeam}->${m.toTeam}`),
  el('td', {}, m.mode),
  el('td', { class: 'state' }, m.state),
  el('td', { class: 'text' }, m.message.length > 120 ? `${m.message.slice(0, 120)}…` : m.message),
  el('td', {}, money(m.costUsd)))));
  if (selected) openMessage(selected, true);
}

function transcriptEntry(entry) {
  switch (entry.kind) {
    case 'assistant_text': return el('div', { class: 'entry text' }, entry.text);
    case 'tool_use': return el('div', { class: 'entry tool' }, el('strong', {}, `tool ${entry.name}`), el('pre', {}, entry.input));
    case 'tool_result': return el('div', { class: entry.is_error ? 'entry result bad' : 'entry result' }, el('pre', {}, entry.content));
    case 'permission': return el('div', { class: entry.allowed ? 'entry permission' : 'entry permission bad' },
      `${entry.allowed ? 'allowed' : 'denied'} ${entry.tool}${entry.by ? ` by ${entry.by}` : ''}${entry.who ? ` (${entry.who})` : ''}${entry.reason ? `: ${entry.reason}` : ''}`);
    default: return el('div', { class: 'entry' }, JSON.stringify(entry));
  }
}

async function openMessage(id, quiet = false) {
  selected = id;
  for (const row of $$('#messages tbody tr')) row.classList.toggle('selected', row.dataset.message === id);
  const data = quiet ? await get(`/dashboard/api/messages/${id}`).catch(() => null) : await attempt(() => get(`/dashboard/api/messages/${id}`));
  if (!data) return;
  const m = data.message;
  const live = m.state === 'queued' || m.state === 'running';
  const detail = $('#message-detail');
  detail.classList.remove('hidden');
  detail.replaceChildren(...nodes(
    el('h3', {}, `${m.fromTeam} → ${m.toTeam} · ${m.state}`),
    el('p', { class: 'muted mono' }, m.messageId),
    live ? button('cancel', () => attempt(() => post(`/dashboard/api/messages/${m.messageId}/cancel`), 'cancelled').then(loadMessages), { id: 'cancel-message' }) : null,
    (m.chain && m.chain.length) ? el('p', { class: 'muted' }, `chain: ${m.chain.map((c) => `${c.fromTeam}→${c.toTeam}`).join(' · ')}`) : null,
    el('h4', {}, 'message'), el('pre', { class: 'question' }, m.message),
    m.answer ? [el('h4', {}, 'answer'), el('pre', { class: 'answer' }, m.answer)] : null,
    m.error ? [el('h4', {}, 'error'), el('pre', { class: 'error' }, m.error)] : null,
    el('p', { class: 'muted' }, `cost $${money(m.costUsd) || '0'} · ${m.durationMs ?? '–'} ms · created ${when(m.createdAtMs)}${m.finishedAtMs ? ` · finished ${when(m.finishedAtMs)}` : ''}`),
    el('h4', {}, 'transcript'),
    el('div', { class: 'transcript' }, (m.transcript || []).map(transcriptEntry))));
}

// --- Charts ----------------------------------------------------------------------------

function bars(values, labelOf, height = 60) {
  const max = Math.max(...values) || 1;
  const width = 6;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${values.length * width} ${height}`);
  svg.setAttribute('class', 'bars');
  values.forEach((value, index) => {
    const h = (value / max) * (height - 2);
    const rect = document.createElementNS(ns, 'rect');
    rect.setAttribute('x', String(index * width));
    rect.setAttribute('y', String(height - h));
    rect.setAttribute('width', String(width - 1));
    rect.setAttribute('height', String(h));
    const title = document.createElementNS(ns, 'title');
    title.textContent = labelOf(value, index);
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

async function loadCharts() {
  const data = await attempt(() => get('/dashboard/api/charts'));
  if (!data) return;
  const teams = new Set([...Object.keys(data.turnsPerMinute), ...Object.keys(data.costPerDay)]);
  if (teams.size === 0) {
    $('#charts').replaceChildren(el('p', { class: 'muted' }, 'No turns in the last 7 days.'));
    return;
  }
  $('#charts').replaceChildren(...[...teams].sort().map((team) => {
    const perMinute = data.turnsPerMinute[team] || new Array(60).fill(0);
    const time = data.turnTime[team];
    const cost = data.costPerDay[team] || new Array(7).fill(0);
    return el('div', { class: 'card chart', 'data-chart': team },
      el('h3', {}, team),
      el('p', { class: 'muted' }, time ? `last hour: ${time.turns} turns · p50 ${time.p50Ms} ms · p95 ${time.p95Ms} ms` : 'no turn in the last hour'),
      el('h4', {}, 'turns per minute, last hour'),
      bars(perMinute, (v, i) => `${60 - i} min ago: ${v} turns`),
      el('h4', {}, 'cost per day, last 7 days'),
      bars(cost, (v, i) => `${6 - i} days ago: $${v.toFixed(4)}`, 40));
  }));
}

// --- Logs and config -------------------------------------------------------------------

async function loadLogs() {
  const data = await attempt(() => get(`/dashboard/api/logs?level=${$('#log-level').value}&limit=500`));
  if (!data) return;
  $('#logs').textContent = data.logs.map((entry) => {
    const fields = Object.entries(entry.fields || {}).map(([k, v]) => `${k}=${v}`).join(' ');
    return `${new Date(entry.time_ms ?? entry.timeMs).toISOString()} ${entry.level} ${entry.target}: ${entry.message} ${fields}`;
  }).join('\n');
}

function keyValues(object) {
  return el('table', { class: 'kv' }, Object.entries(object).map(([key, value]) => el('tr', {},
    el('th', {}, key), el('td', {}, value === null || value === undefined ? '–' : typeof value === 'object' ? JSON.stringify(value) : String(value)))));
}

async function loadConfig() {
  const data = await attempt(() => get('/dashboard/api/config'));
  if (!data) return;
  const reload = data.lastReload;
  let reloadView = el('p', { class: 'muted' }, 'No reload since Iris started.');
  if (reload && reload.type === 'config_rejected') {
    reloadView = el('div', {}, el('p', { class: 'bad' }, `The last edit of ${reload.file} was refused (${when(reload.atMs)}); the configuration in force stays:`), el('pre', { class: 'error' }, reload.error));
  } else if (reload) {
    reloadView = el('p', {}, `Reloaded from ${reload.file || 'a program'} at ${when(reload.atMs)}.`);
  }
  $('#config').replaceChildren(...nodes(
    el('p', {}, `file: ${data.file || '(none: embedded defaults)'} · IRIS_HOME ${data.irisHome} · database ${data.database}`),
    reloadView,
    data.warnings.length ? el('div', {}, el('h3', {}, 'warnings'), el('pre', {}, data.warnings.join('\n'))) : null,
    el('h3', {}, 'settings'), keyValues(data.settings),
    el('h3', {}, 'teams'),
    data.teams.map((team) => el('div', { class: 'card' }, el('h4', {}, team.name), keyValues(team)))));
}

// ---------------------------------------------------------------------------------------
// Live.

function onPool(event) {
  soon('overview', loadOverview);
  if (current === 'messages' && ['message_queued', 'message_finished', 'turn_started'].includes(event.type)) soon('messages', loadMessages, 150);
  if (current === 'logs') soon('logs', loadLogs, 500);
  if (current === 'config' && (event.type === 'config_reloaded' || event.type === 'config_rejected')) soon('config', loadConfig);
}

function connect() {
  const source = new EventSource('/dashboard/events');
  const live = $('#live');
  let opened = false;
  source.addEventListener('open', () => {
    live.textContent = 'live';
    live.className = 'live on';
    // After a reconnect, events may have been missed: reload what is shown.
    if (opened) refresh(current);
    opened = true;
  });
  source.addEventListener('error', () => { live.textContent = 'reconnecting…'; live.className = 'live'; });
  source.addEventListener('pool', (message) => onPool(JSON.parse(message.data)));
  source.addEventListener('approval', () => soon('overview', loadOverview, 10));
  source.addEventListener('lagged', () => refresh(current));
}

document.addEventListener('DOMContentLoaded', () => {
  for (const tab of $$('#tabs button')) tab.addEventListener('click', () => show(tab.dataset.view));
  $('#wake-all').addEventListener('click', () => attempt(() => post('/dashboard/api/wake-all', { from: $('#wake-all-from').value }), 'woken').then(loadOverview));
  for (const id of ['#filter-team', '#filter-state']) $(id).addEventListener('change', loadMessages);
  for (const id of ['#filter-q', '#filter-pair']) $(id).addEventListener('input', () => soon('filter', loadMessages, 200));
  $('#log-level').addEventListener('change', loadLogs);
  loadOverview();
  connect();
});
