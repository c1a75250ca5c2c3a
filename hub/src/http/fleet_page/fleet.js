// Cairn fleet page: renders the hub's live feed (GET /v1/admin/fleet/stream, Server-Sent
// Events). Hand-written, no dependencies. Every value from the hub is untrusted text (host
// names, tags, stage and step names, error messages): it is only ever put into the page
// with textContent or as an attribute value, never parsed as HTML.
'use strict';
(function () {
  const STATUSES = ['applied', 'applying', 'failed', 'registered'];
  let phases = ['OS', 'Kubernetes', 'CNI', 'Add-ons'];
  let interval = 30; // heartbeat period (s); a host silent for 3 periods is shown offline
  let skew = 0; // hub clock minus ours (s)
  const rows = new Map(); // host id -> { tr, host, parts }
  const tbody = document.getElementById('hosts');
  const summary = document.getElementById('summary');
  const conn = document.getElementById('conn');
  const filter = document.getElementById('filter');
  const empty = document.getElementById('empty');

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const hubNow = () => Date.now() / 1000 + skew;
  const keyOf = (h) => [h.tenant, h.project, h.name, h.id].join('\u0000');
  const profileText = (name, version) =>
    name ? (version !== null && version !== undefined ? name + ' v' + version : name) : '—';

  function ago(t) {
    const s = Math.max(0, Math.round(hubNow() - t));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return new Date(t * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }
  const isStale = (h) => hubNow() - h.last_seen > 3 * interval;

  // One row, built once per host; update() rewrites its cells from a host object.
  function makeRow() {
    const tr = el('tr');
    const p = {};
    const td = (cls) => { const c = el('td', cls); tr.appendChild(c); return c; };
    const host = td('c-name');
    p.name = host.appendChild(el('div', 'name'));
    p.id = host.appendChild(el('div', 'sub'));
    p.project = td('c-project');
    p.tags = td('c-tags');
    p.assigned = td('c-assigned');
    const applied = td('c-applied');
    p.applied = applied.appendChild(el('div'));
    p.outdated = applied.appendChild(el('div', 'outdated'));
    p.status = td('c-status').appendChild(el('span', 'badge'));
    const prog = td('c-progress');
    p.bar = prog.appendChild(el('div', 'bar'));
    p.bar.setAttribute('role', 'progressbar');
    p.bar.setAttribute('aria-valuemin', '0');
    p.bar.setAttribute('aria-valuemax', '100');
    p.segs = phases.map((name) => {
      const s = el('div', 'seg');
      s.dataset.phase = name;
      p.bar.appendChild(s);
      return s;
    });
    p.where = prog.appendChild(el('div', 'where'));
    p.fail = prog.appendChild(el('div', 'fail'));
    p.failStep = p.fail.appendChild(el('div', 'fail-step'));
    p.failMsg = p.fail.appendChild(el('div', 'fail-msg'));
    const seen = td('c-seen');
    p.seen = seen.appendChild(el('div'));
    p.stale = seen.appendChild(el('div', 'stale'));
    return { tr, parts: p };
  }

  function stageText(h) {
    const bits = [];
    if (h.current_stage) bits.push('stage ' + h.current_stage);
    if (h.current_step) bits.push('step ' + h.current_step);
    return bits.join(' · ');
  }

  function update(row, h) {
    const p = row.parts;
    const tr = row.tr;
    row.host = h;
    tr.dataset.hostId = h.id;
    tr.dataset.hostName = h.name;
    tr.dataset.status = h.status;
    tr.dataset.progress = String(h.progress.percent);
    p.name.textContent = h.name;
    p.id.textContent = h.id;
    p.project.textContent = h.tenant + '/' + h.project;
    p.tags.replaceChildren(...Object.keys(h.tags || {}).sort().map((k) => {
      const t = el('span', 'tag', k + '=' + h.tags[k]);
      t.title = k + '=' + h.tags[k];
      return t;
    }));
    p.assigned.textContent = profileText(h.assigned_profile, h.assigned_version);
    p.applied.textContent = profileText(h.applied_profile, h.applied_version);
    const outdated = h.assigned_profile && (h.assigned_profile !== h.applied_profile ||
      h.assigned_version !== h.applied_version);
    p.outdated.textContent = outdated && h.status === 'applied' ? 'update pending' : '';
    p.status.textContent = h.status;
    p.status.className = 'badge ' + (STATUSES.includes(h.status) ? h.status : 'registered');
    const pr = h.progress;
    p.bar.setAttribute('aria-valuenow', String(pr.percent));
    const phaseName = pr.phase !== null && pr.phase !== undefined ? phases[pr.phase] : '';
    p.bar.setAttribute('aria-label', 'progress ' + pr.percent + '%' + (phaseName ? ', ' + phaseName : ''));
    p.segs.forEach((s, i) => {
      const state = pr.phases[i] || 'pending';
      s.className = 'seg ' + state;
      s.title = phases[i] + ': ' + state;
    });
    let where;
    if (h.status === 'applied') where = 'all phases done · 100%';
    else if (h.status === 'registered') where = 'waiting for the first apply';
    else where = [phaseName, stageText(h), pr.percent + '%'].filter(Boolean).join(' · ');
    p.where.textContent = where;
    const failed = h.status === 'failed';
    p.fail.hidden = !failed;
    p.failStep.textContent = failed ? 'failed at ' + (stageText(h) || 'an unknown step') : '';
    p.failMsg.textContent = failed ? h.last_error : '';
    tr.dataset.search = [h.name, h.id, h.tenant, h.project, h.status, h.assigned_profile || '',
      h.applied_profile || '', h.current_stage, h.current_step,
      ...Object.keys(h.tags || {}).map((k) => k + '=' + h.tags[k])].join(' ').toLowerCase();
    refreshSeen(row);
    applyFilter(row);
  }

  function refreshSeen(row) {
    const h = row.host;
    const text = ago(h.last_seen);
    if (row.parts.seen.textContent !== text) row.parts.seen.textContent = text;
    row.parts.seen.title = new Date(h.last_seen * 1000).toISOString();
    const stale = isStale(h) ? 'offline' : '';
    if (row.parts.stale.textContent !== stale) row.parts.stale.textContent = stale;
  }

  function applyFilter(row) {
    const q = filter.value.trim().toLowerCase();
    const show = !q || q.split(/\s+/).every((w) => row.tr.dataset.search.includes(w));
    row.tr.classList.toggle('hidden', !show);
  }

  // Insert a new row at its sorted place (tenant, project, name).
  function place(row) {
    let after = null;
    for (const other of tbody.children) {
      const o = rows.get(other.dataset.hostId);
      if (o && o.key > row.key) { after = other; break; }
    }
    tbody.insertBefore(row.tr, after);
  }

  // Put every row in sorted order: one pass instead of one search per new row.
  function sortAll() {
    const sorted = [...rows.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const row of sorted) tbody.appendChild(row.tr);
  }

  // Add or update a host; answers true when the row is new (not yet in the table).
  function upsert(h) {
    let row = rows.get(h.id);
    const fresh = !row;
    if (fresh) {
      row = makeRow();
      rows.set(h.id, row);
    }
    update(row, h);
    row.key = keyOf(h);
    return fresh;
  }

  function remove(id) {
    const row = rows.get(id);
    if (row) {
      row.tr.remove();
      rows.delete(id);
    }
  }

  function renderSummary() {
    const counts = { applied: 0, applying: 0, failed: 0, registered: 0 };
    let stale = 0;
    for (const { host } of rows.values()) {
      counts[host.status] = (counts[host.status] || 0) + 1;
      if (isStale(host)) stale += 1;
    }
    const chip = (label, n) => {
      const c = el('span', 'count');
      c.dataset.count = label;
      c.append(el('b', null, n), ' ' + label);
      return c;
    };
    summary.replaceChildren(chip('hosts', rows.size), ...STATUSES.map((s) => chip(s, counts[s])),
      chip('offline', stale));
    empty.hidden = rows.size > 0;
  }

  function clock(msg) {
    if (typeof msg.now === 'number') skew = msg.now - Date.now() / 1000;
  }

  function onSnapshot(msg) {
    clock(msg);
    if (msg.heartbeat_interval_secs) interval = msg.heartbeat_interval_secs;
    if (Array.isArray(msg.phases) && msg.phases.length === 4) phases = msg.phases;
    const present = new Set(msg.hosts.map((h) => h.id));
    for (const id of [...rows.keys()]) if (!present.has(id)) remove(id);
    for (const h of msg.hosts) upsert(h);
    // The hub sends the snapshot sorted: put every row in that order.
    for (const h of msg.hosts) tbody.appendChild(rows.get(h.id).tr);
    renderSummary();
  }

  function onHosts(msg) {
    clock(msg);
    const added = msg.hosts.filter((h) => upsert(h)).map((h) => rows.get(h.id));
    if (added.length > 16) sortAll();
    else for (const row of added) place(row);
    renderSummary();
  }

  function onSeen(msg) {
    clock(msg);
    for (const [id, t] of Object.entries(msg.seen)) {
      const row = rows.get(id);
      if (row) {
        row.host = Object.assign({}, row.host, { last_seen: t });
        refreshSeen(row);
      }
    }
  }

  function onRemoved(msg) {
    for (const id of msg.ids) remove(id);
    renderSummary();
  }

  function handler(fn) {
    return (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      fn(msg);
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    };
  }

  function setConn(state, text) {
    conn.className = 'conn ' + state;
    conn.textContent = text;
  }

  let source = null;
  function connect() {
    setConn('connecting', 'connecting…');
    source = new EventSource('/v1/admin/fleet/stream');
    source.addEventListener('open', () => setConn('live', 'live'));
    source.addEventListener('snapshot', handler(onSnapshot));
    source.addEventListener('hosts', handler(onHosts));
    source.addEventListener('seen', handler(onSeen));
    source.addEventListener('removed', handler(onRemoved));
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (session expired, hub restarted, too many streams): find out which.
        setConn('down', 'disconnected');
        fetch('/v1/admin/fleet', { credentials: 'same-origin', method: 'GET' })
          .then((r) => {
            if (r.status === 401) window.location.assign('/fleet');
            else setTimeout(connect, 5000);
          })
          .catch(() => setTimeout(connect, 5000));
      } else {
        setConn('down', 'reconnecting…');
      }
    });
  }

  filter.addEventListener('input', () => { for (const row of rows.values()) applyFilter(row); });
  setInterval(() => {
    for (const row of rows.values()) refreshSeen(row);
    renderSummary();
  }, 1000);
  renderSummary();
  connect();
})();
