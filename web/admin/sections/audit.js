// Audit log: filters (actor, action, entity, time range), cursor paging, CSV export.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, sectionHead, card, table, fmtTime, download, busy, fetchIf } from '../util.js';

export async function render(host) {
  let names = new Map();
  const ctl = (id, label, el) => h('div', { class: 'field' }, h('label', { for: id }, label), el);
  const actor = h('select', { id: 'audit-actor' }, h('option', { value: '' }, 'anyone'));
  const action = h('input', { id: 'audit-action', type: 'text', placeholder: 'user.created', autocomplete: 'off', list: 'audit-actions' });
  const actions = h('datalist', { id: 'audit-actions' });
  const entity = h('input', { id: 'audit-entity', type: 'text', placeholder: 'user, team, inbox…', autocomplete: 'off' });
  const since = h('input', { id: 'audit-since', type: 'datetime-local' });
  const until = h('input', { id: 'audit-until', type: 'datetime-local' });
  const err = h('p', { class: 'form-error', role: 'alert' });
  const apply = h('button', { type: 'submit', class: 'primary', id: 'audit-apply' }, 'Apply filters');
  const exportButton = h('button', { type: 'button', id: 'audit-export', onclick: () => exportCsv() }, 'Export CSV');
  const filters = h('form', { class: 'filters card', novalidate: true, 'aria-label': 'Audit filters' },
    ctl('audit-actor', 'Actor', actor), ctl('audit-action', 'Action', action), actions,
    ctl('audit-entity', 'Entity type', entity),
    ctl('audit-since', 'From', since), ctl('audit-until', 'Before', until),
    h('div', { class: 'actions' }, apply, exportButton), err);
  const listHost = h('div', { 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' });
  host.append(sectionHead('Audit log'), filters, card('Records', listHost, pager));

  let pages = [null]; // cursors: pages[i] is the cursor that fetches page i
  let page = 0;

  function query() {
    err.textContent = '';
    const q = {};
    if (actor.value) q.actor_id = actor.value;
    if (action.value.trim()) q.action = action.value.trim();
    if (entity.value.trim()) q.entity_type = entity.value.trim();
    const s = since.value ? new Date(since.value) : null;
    const u = until.value ? new Date(until.value) : null;
    if (s && u && s >= u) { err.textContent = '"From" must be before "Before".'; since.setAttribute('aria-invalid', 'true'); return null; }
    since.removeAttribute('aria-invalid');
    if (s) q.since = s.toISOString();
    if (u) q.until = u.toISOString();
    return q;
  }

  const who = (r) => (r.actor_id ? `${names.get(r.actor_id) || r.actor_id}` : r.actor_type);
  const snapshot = (v) => (v === null || v === undefined ? null : h('pre', { class: 'json' }, JSON.stringify(v, null, 2)));

  async function load() {
    const q = query();
    if (!q) return;
    try {
      const res = await api('GET', '/v1/audit', undefined, { query: { ...q, limit: 25, cursor: pages[page] || undefined } });
      pages[page + 1] = res.next_cursor || undefined;
      clear(listHost);
      listHost.appendChild(table([
        { label: 'When', cell: (r) => fmtTime(r.at) },
        { label: 'Actor', cell: (r) => who(r) },
        { label: 'Action', cell: (r) => h('code', {}, r.action) },
        { label: 'Entity', cell: (r) => [r.entity_type, r.entity_id ? [' ', h('code', {}, r.entity_id)] : null] },
        { label: 'From', cell: (r) => r.ip || '—' },
        { label: 'Change', cell: (r) => ((r.before || r.after)
          ? h('details', {}, h('summary', {}, 'before / after'), h('div', { class: 'diff' }, h('div', {}, h('strong', {}, 'Before'), snapshot(r.before) || ' —'), h('div', {}, h('strong', {}, 'After'), snapshot(r.after) || ' —')))
          : '—') },
      ], res.data || [], { caption: 'Audit records', empty: 'No records match.' }));
      for (const r of res.data || []) actions.appendChild(h('option', { value: r.action }));
      dedupeActions();
      clear(pager);
      pager.append(
        h('button', { type: 'button', class: 'btn-small', disabled: page === 0, onclick: () => { page--; load(); } }, 'Newer'),
        h('span', { class: 'muted' }, ` Page ${page + 1} `),
        h('button', { type: 'button', class: 'btn-small', disabled: !res.next_cursor, onclick: () => { page++; load(); } }, 'Older'));
    } catch (e) {
      clear(listHost);
      listHost.appendChild(h('p', { class: 'form-error', role: 'alert' }, humanError(e)));
    }
  }

  function dedupeActions() {
    const seen = new Set();
    for (const o of [...actions.children]) { if (seen.has(o.value)) o.remove(); else seen.add(o.value); }
  }

  async function exportCsv() {
    const q = query();
    if (!q) return;
    await busy(exportButton, async () => {
      try {
        const res = await api('GET', '/v1/audit/export.csv', undefined, { query: q, raw: true });
        const blob = await res.blob();
        download(blob, `audit-${new Date().toISOString().slice(0, 10)}.csv`);
        if (res.headers.get('X-Export-Truncated') === 'true') err.textContent = `The export holds the newest ${res.headers.get('X-Export-Row-Cap') || ''} records only; narrow the filters for the rest.`;
      } catch (e) {
        err.textContent = humanError(e);
      }
    });
  }

  filters.addEventListener('submit', (e) => { e.preventDefault(); pages = [null]; page = 0; load(); });

  await fetchIf('manage_users', '/v1/admin/users').then((users) => {
    if (!users.length) throw new Error('no user list');
    for (const u of users) {
      names.set(u.id, u.name);
      actor.appendChild(h('option', { value: u.id }, `${u.name} (${u.email})`));
    }
  }).catch(() => {
    // No manage_users: the actor filter takes an id instead.
    const text = h('input', { id: 'audit-actor', type: 'text', placeholder: 'usr_… or key_…', autocomplete: 'off' });
    actor.replaceWith(text);
    Object.defineProperty(actor, 'value', { get: () => text.value.trim() });
  });
  await load();
  return {};
}
