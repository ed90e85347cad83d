// Alerts: the rules in force (config and REST), the destinations' health, REST rule CRUD, and
// the alert history.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, toast, sectionHead, card, table, badge, confirmDialog, fmtTime, fetchAll, teamsList } from '../util.js';
import { form, showForm, isSlug } from '../forms.js';

const SIGNALS = {
  queue_backlog: { label: 'Queue backlog (conversations waiting)', unit: 'conversations', windowed: false },
  webhook_error_ratio: { label: 'Webhook error ratio', unit: '%', windowed: true },
  outbound_failure_ratio: { label: 'Outbound failure ratio', unit: '%', windowed: true, per: ['provider'], provider: true },
  sla_breaches: { label: 'SLA breaches', unit: 'breaches', windowed: true, per: ['team'], team: true },
  credentials_rejected: { label: 'Credentials rejected by a provider', unit: 'refusals', windowed: true, per: ['provider'], provider: true },
  inbound_silence: { label: 'Inbound silence (business seconds)', unit: 's', windowed: false, inbox: true },
  webhook_endpoints_disabled: { label: 'Outbound webhook endpoints disabled', unit: 'endpoints', windowed: true },
};
const SEVERITIES = ['critical', 'error', 'warning', 'info'];

export async function render(host) {
  let data = { rules: [], destinations: [] };
  let teams = [];
  let inboxes = [];
  let historyCursor = null;
  let historyState = '';
  const formHost = h('div', { class: 'form-host' });
  const rulesHost = h('div');
  const destHost = h('div');
  const historyHost = h('div');
  const newButton = h('button', { type: 'button', class: 'primary', id: 'new-alert-rule', onclick: () => ruleForm(null) }, 'New alert rule');
  host.append(sectionHead('Alerts', newButton), formHost, rulesHost, destHost, historyHost);

  async function loadRules() {
    data = await api('GET', '/v1/admin/alert-rules');
    clear(rulesHost);
    rulesHost.appendChild(card('Alert rules', table([
      { label: 'Rule', cell: (r) => [h('strong', {}, r.name), ' ', badge(r.source === 'api' ? 'added here' : 'config', r.source === 'api' ? '' : 'muted')] },
      { label: 'Signal', cell: (r) => h('code', {}, r.signal) },
      { label: 'Fires above', cell: (r) => `${r.threshold}${(SIGNALS[r.signal] || {}).unit === '%' ? '%' : ''}${r.window_secs ? ` over ${r.window_secs}s` : ''}` },
      { label: 'Held / hold-down', cell: (r) => `${r.for_secs}s / ${r.hold_down_secs}s` },
      { label: 'Scope', cell: (r) => (r.per ? `one per ${r.per}` : r.only ? `only ${r.only}` : 'account') },
      { label: 'Severity', cell: (r) => badge(r.severity, r.severity) },
      { label: 'Destinations', cell: (r) => r.destinations.join(', ') },
      { label: 'Actions', cell: (r) => (r.source === 'api'
        ? h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn-small', onclick: () => ruleForm(r), 'aria-label': `Edit alert rule ${r.name}` }, 'Edit'),
          h('button', { type: 'button', class: 'btn-small danger', onclick: () => remove(r), 'aria-label': `Delete alert rule ${r.name}` }, 'Delete'))
        : h('span', { class: 'muted' }, 'edit in the config')) },
    ], data.rules, { caption: 'Alert rules', empty: 'No alert rules.' })));
    clear(destHost);
    destHost.appendChild(card('Destinations', h('p', { class: 'hint' }, 'Destinations carry secrets, so they are declared in the hub\'s configuration ([[alerts.destinations]]).'),
      table([
        { label: 'Destination', cell: (d) => h('strong', {}, d.name) },
        { label: 'Kind', cell: (d) => d.kind },
        { label: 'Status', cell: (d) => badge(d.status, { ok: 'ok', broken: 'error', failing: 'warn' }[d.status] || 'muted') },
        { label: 'Last error', cell: (d) => d.last_error || '—' },
      ], data.destinations, { caption: 'Destinations', empty: 'No destinations configured: alerts have nowhere to go.' })));
  }

  function ruleForm(r) {
    const signal = r ? r.signal : 'queue_backlog';
    const scopeVal = (k) => (r && r.only && r.only.startsWith(`${k}:`) ? r.only.slice(k.length + 1) : '');
    const fields = [
      { name: 'name', label: 'Rule name', value: r ? r.name : '', required: true, attrs: { maxlength: 64, autocomplete: 'off', readOnly: !!r }, hint: 'Lowercase letters, digits, - and _.', check: (v) => (isSlug(v) ? undefined : 'Use 1 to 64 lowercase letters, digits, - and _.') },
      { name: 'signal', label: 'Signal', type: 'select', options: Object.entries(SIGNALS).map(([k, s]) => [k, s.label]), value: signal },
      { name: 'threshold', label: 'Threshold (fires above)', type: 'number', value: r ? r.threshold : '', required: true, attrs: { step: 'any', min: 0 }, check: (v) => (v >= 0 ? undefined : 'A number ≥ 0.') },
      { name: 'window_secs', label: 'Window (seconds)', type: 'number', value: r && r.window_secs ? r.window_secs : 300, attrs: { min: 10, max: 86400, step: 1 }, hint: '10 to 86400.', check: (v) => (v === null || (Number.isInteger(v) && v >= 10 && v <= 86400) ? undefined : 'Whole seconds from 10 to 86400.') },
      { name: 'for_secs', label: 'Hold for (seconds) before firing', type: 'number', value: r ? r.for_secs : 0, attrs: { min: 0, max: 86400, step: 1 }, check: (v) => (v === null || (Number.isInteger(v) && v >= 0 && v <= 86400) ? undefined : 'Whole seconds from 0 to 86400.') },
      { name: 'hold_down_secs', label: 'Clear for (seconds) before resolving', type: 'number', value: r ? r.hold_down_secs : 300, attrs: { min: 0, max: 86400, step: 1 }, check: (v) => (v === null || (Number.isInteger(v) && v >= 0 && v <= 86400) ? undefined : 'Whole seconds from 0 to 86400.') },
      { name: 'severity', label: 'Severity', type: 'select', options: SEVERITIES, value: r ? r.severity : 'warning' },
      { name: 'destinations', label: 'Destinations', type: 'checkboxes', options: data.destinations.map((d) => [d.name, `${d.name} (${d.kind})`]), value: r ? r.destinations : [], required: true, requiredMessage: 'Choose at least one destination.', emptyText: 'No destinations are configured.' },
      { name: 'per', label: 'One alert per', type: 'select', options: [['', 'the account (one alert)'], ['provider', 'provider'], ['team', 'team']], value: r && r.per ? r.per : '' },
      { name: 'provider', label: 'Only this provider', type: 'select', options: [['', 'any'], ['whatsapp', 'WhatsApp'], ['twilio', 'Twilio']], value: scopeVal('provider') },
      { name: 'team', label: 'Only this team', type: 'select', options: [['', 'any'], ...teams.map((t) => [t.id, t.name])], value: scopeVal('team') },
      { name: 'inbox', label: 'Only this inbox', type: 'select', options: [['', 'every inbox (one alert each)'], ...inboxes.map((i) => [i.id, i.name])], value: scopeVal('inbox') },
    ];
    const f = form({
      title: r ? `Edit alert rule ${r.name}` : 'New alert rule', id: 'alert-rule-form', submitLabel: r ? 'Save rule' : 'Add rule', fields,
      onCancel: () => clear(formHost),
      onSubmit: async (v) => {
        const s = SIGNALS[v.signal];
        const body = { name: v.name, signal: v.signal, threshold: v.threshold, for_secs: v.for_secs ?? 0, hold_down_secs: v.hold_down_secs ?? 300, severity: v.severity, destinations: v.destinations };
        if (s.windowed && v.window_secs !== null) body.window_secs = v.window_secs;
        if (s.per && v.per) body.per = v.per;
        if (s.provider && v.provider && !v.per) body.provider = v.provider;
        if (s.team && v.team && !v.per) body.team = v.team;
        if (s.inbox && v.inbox) body.inbox = v.inbox;
        if (r) await api('PUT', `/v1/admin/alert-rules/${encodeURIComponent(r.name)}`, body);
        else await api('POST', '/v1/admin/alert-rules', body);
        toast(`Alert rule ${v.name} saved`);
        clear(formHost);
        await loadRules();
      },
    });
    const sync = () => {
      const s = SIGNALS[f.controls.signal.focusable.value];
      f.controls.window_secs.wrap.hidden = !s.windowed;
      const perSel = f.controls.per.focusable;
      for (const o of perSel.options) o.hidden = o.value !== '' && !(s.per || []).includes(o.value);
      if (perSel.selectedOptions[0] && perSel.selectedOptions[0].hidden) perSel.value = '';
      f.controls.per.wrap.hidden = !s.per;
      f.controls.provider.wrap.hidden = !s.provider;
      f.controls.team.wrap.hidden = !s.team;
      f.controls.inbox.wrap.hidden = !s.inbox;
    };
    f.controls.signal.focusable.addEventListener('change', sync);
    sync();
    showForm(formHost, f);
  }

  async function remove(r) {
    if (!await confirmDialog(`Delete the alert rule ${r.name}? An open alert of it resolves.`, { okLabel: 'Delete', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/alert-rules/${encodeURIComponent(r.name)}`);
      toast('Alert rule deleted');
      await loadRules();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  // --- history ----------------------------------------------------------------------------

  const filter = h('select', { id: 'alert-state-filter' }, h('option', { value: '' }, 'all'), h('option', { value: 'firing' }, 'firing'), h('option', { value: 'resolved' }, 'resolved'));
  const list = h('div');
  const more = h('button', { type: 'button', class: 'btn-small', hidden: true, onclick: () => loadHistory(true) }, 'Older alerts');
  filter.addEventListener('change', () => { historyState = filter.value; loadHistory(false); });
  historyHost.appendChild(card('Alert history',
    h('div', { class: 'filters' }, h('label', { for: 'alert-state-filter' }, 'State'), filter),
    list, more));
  let rows = [];

  async function loadHistory(append) {
    const query = { limit: 25 };
    if (historyState) query.state = historyState;
    if (append && historyCursor) query.cursor = historyCursor;
    try {
      const page = await api('GET', '/v1/admin/alerts', undefined, { query });
      rows = append ? rows.concat(page.data || []) : page.data || [];
      historyCursor = page.next_cursor;
      more.hidden = !historyCursor;
      clear(list);
      list.appendChild(table([
        { label: 'Fired', cell: (a) => fmtTime(a.fired_at_ms) },
        { label: 'Rule', cell: (a) => h('strong', {}, a.rule) },
        { label: 'Scope', cell: (a) => a.scope },
        { label: 'Severity', cell: (a) => badge(a.severity, a.severity) },
        { label: 'State', cell: (a) => badge(a.state, a.state === 'firing' ? 'error' : 'ok') },
        { label: 'Summary', cell: (a) => a.summary },
        { label: 'Resolved', cell: (a) => fmtTime(a.resolved_at_ms) },
        { label: 'Notices', cell: (a) => h('ul', { class: 'plain' }, (a.deliveries || []).map((d) => h('li', {}, `${d.destination} · ${d.transition} · ${d.state}${d.attempts ? ` (${d.attempts} attempts)` : ''}${d.last_code ? ` · ${d.last_code}` : ''}`))) },
      ], rows, { caption: 'Alert history', empty: 'No alerts have fired.' }));
    } catch (err) {
      clear(list);
      list.appendChild(h('p', { class: 'form-error', role: 'alert' }, humanError(err)));
    }
  }

  await Promise.all([
    loadRules(),
    loadHistory(false),
    teamsList().then((t) => { teams = t; }).catch(() => {}),
    fetchAll('/v1/admin/inboxes').then((i) => { inboxes = i; }).catch(() => {}),
  ]);
  return { shortcuts: { n: () => ruleForm(null) } };
}
