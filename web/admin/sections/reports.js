// Reports: SLA and volume over a date range, as tables with simple bars, and CSV export.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, sectionHead, card, table, fmtDuration, download, toCsv, busy, fetchIf, teamsList, CHANNEL_LABEL } from '../util.js';

const DAY = 86_400_000;
const isoDay = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60_000).toISOString().slice(0, 10);

export async function render(host) {
  let names = new Map();
  const today = Date.now();
  const since = h('input', { type: 'date', id: 'report-since', value: isoDay(today - 7 * DAY) });
  const until = h('input', { type: 'date', id: 'report-until', value: isoDay(today) });
  const groupBy = h('select', { id: 'report-group' },
    h('option', { value: 'channel' }, 'channel'), h('option', { value: 'inbox' }, 'inbox'),
    h('option', { value: 'team' }, 'team'), h('option', { value: 'agent' }, 'agent'));
  const err = h('p', { class: 'form-error', role: 'alert' });
  const run = h('button', { type: 'submit', class: 'primary', id: 'run-report' }, 'Show');
  const slaHost = h('div', { 'aria-live': 'polite' });
  const volumeHost = h('div', { 'aria-live': 'polite' });
  const filters = h('form', { class: 'filters card', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'report-since' }, 'From'), since),
    h('div', { class: 'field' }, h('label', { for: 'report-until' }, 'To (inclusive)'), until),
    h('div', { class: 'field' }, h('label', { for: 'report-group' }, 'Volume by'), groupBy),
    h('div', { class: 'actions' }, run), err);
  host.append(sectionHead('Reports'), filters, slaHost, volumeHost);

  function windowQuery() {
    err.textContent = '';
    since.removeAttribute('aria-invalid');
    until.removeAttribute('aria-invalid');
    if (!since.value || !until.value) { err.textContent = 'Choose both dates.'; (since.value ? until : since).setAttribute('aria-invalid', 'true'); return null; }
    const s = new Date(`${since.value}T00:00:00`).getTime();
    const u = new Date(`${until.value}T00:00:00`).getTime() + DAY;
    if (s >= u) { err.textContent = '"From" must be on or before "To".'; since.setAttribute('aria-invalid', 'true'); return null; }
    if (u - s > 366 * DAY) { err.textContent = 'The range can be at most 366 days.'; since.setAttribute('aria-invalid', 'true'); return null; }
    return { since: new Date(s).toISOString(), until: new Date(Math.min(u, Date.now())).toISOString() };
  }

  const label = (kind, key) => {
    if (key === null || key === undefined) return kind === 'agent' ? 'unassigned' : kind === 'team' ? 'no team' : '—';
    if (kind === 'channel') return CHANNEL_LABEL[key] || key;
    return names.get(key) || key;
  };

  const barCell = (value, max) => h('span', { class: 'bar-cell' },
    h('meter', { min: 0, max: Math.max(max, 1), value, 'aria-hidden': 'true' }), ` ${value}`);

  function csvButton(name, fn) {
    return h('button', { type: 'button', class: 'btn-small', onclick: () => download(new Blob([fn()], { type: 'text/csv' }), `${name}-${since.value}-${until.value}.csv`) }, 'Export CSV');
  }

  async function load() {
    const q = windowQuery();
    if (!q) return;
    await busy(run, async () => {
      const [sla, volume] = await Promise.allSettled([
        api('GET', '/v1/reports/sla', undefined, { query: q }),
        api('GET', '/v1/reports/volume', undefined, { query: { ...q, group_by: groupBy.value } }),
      ]);
      clear(slaHost);
      if (sla.status === 'fulfilled') {
        const r = sla.value;
        const rows = [...r.by_assignee.map((a) => ({ who: label('agent', a.assignee_id), ...a })), { who: 'Total', ...r.totals, total: true }];
        const max = Math.max(...rows.map((x) => x.conversations));
        slaHost.appendChild(card('SLA',
          h('div', { class: 'actions' }, csvButton('sla', () => toCsv(
            ['assignee', 'conversations', 'open', 'resolved', 'responded', 'first_response_median_ms', 'first_response_p90_ms'],
            rows.map((x) => [x.total ? 'total' : x.assignee_id || 'unassigned', x.conversations, x.open, x.resolved, x.responded, x.first_response_median_ms, x.first_response_p90_ms])))),
          r.truncated ? h('p', { class: 'notice warn' }, 'More conversations matched than a report covers: these figures are over the newest.') : null,
          table([
            { label: 'Assignee', cell: (x) => (x.total ? h('strong', {}, 'Total') : x.who) },
            { label: 'Conversations', cell: (x) => barCell(x.conversations, max) },
            { label: 'Open', class: 'num', cell: (x) => String(x.open) },
            { label: 'Resolved', class: 'num', cell: (x) => String(x.resolved) },
            { label: 'Responded', class: 'num', cell: (x) => String(x.responded) },
            { label: 'First response (median)', class: 'num', cell: (x) => fmtDuration(x.first_response_median_ms) },
            { label: 'First response (p90)', class: 'num', cell: (x) => fmtDuration(x.first_response_p90_ms) },
          ], rows, { caption: 'SLA report' })));
      } else slaHost.appendChild(card('SLA', h('p', { class: 'form-error', role: 'alert' }, humanError(sla.reason))));
      clear(volumeHost);
      if (volume.status === 'fulfilled') {
        const r = volume.value;
        const kind = r.group_by || groupBy.value;
        const max = Math.max(0, ...r.rows.map((x) => x.conversations));
        const maxMsg = Math.max(0, ...r.rows.map((x) => x.inbound_messages + x.outbound_messages));
        volumeHost.appendChild(card(`Volume by ${kind}`,
          h('div', { class: 'actions' }, csvButton('volume', () => toCsv(
            [kind, 'conversations', 'resolved', 'inbound_messages', 'outbound_messages'],
            r.rows.map((x) => [x.key ?? '', x.conversations, x.resolved, x.inbound_messages, x.outbound_messages])))),
          table([
            { label: kind[0].toUpperCase() + kind.slice(1), cell: (x) => label(kind, x.key) },
            { label: 'Conversations', cell: (x) => barCell(x.conversations, max) },
            { label: 'Resolved', class: 'num', cell: (x) => String(x.resolved) },
            { label: 'Messages in', class: 'num', cell: (x) => String(x.inbound_messages) },
            { label: 'Replies out', class: 'num', cell: (x) => String(x.outbound_messages) },
            { label: 'Messages', cell: (x) => barCell(x.inbound_messages + x.outbound_messages, maxMsg) },
          ], r.rows, { caption: 'Volume report', empty: 'No conversations in this range.' })));
      } else volumeHost.appendChild(card('Volume', h('p', { class: 'form-error', role: 'alert' }, humanError(volume.reason))));
    });
  }

  filters.addEventListener('submit', (e) => { e.preventDefault(); load(); });
  groupBy.addEventListener('change', () => load());

  // Names for ids (best effort: each list needs its own permission).
  await Promise.all([
    fetchIf('configure_routing', '/v1/admin/agents').then((l) => l.forEach((a) => names.set(a.user_id, a.name))).catch(() => {}),
    fetchIf('configure_routing', '/v1/admin/inboxes').then((l) => l.forEach((i) => names.set(i.id, i.name))).catch(() => {}),
    teamsList().then((l) => l.forEach((t) => names.set(t.id, t.name))).catch(() => {}),
  ]);
  await load();
  return {};
}
