// Outbound webhooks (docs/WEBHOOKS_OUT.md): endpoints list / create / enable-disable / test,
// secret rotation, deliveries with replay.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, toast, sectionHead, card, table, fmtTime, badge, confirmDialog, copyable, fetchAll, busy } from '../util.js';
import { form, showForm } from '../forms.js';

const EVENT_TYPES = ['*', 'conversation.*', 'conversation.created', 'conversation.updated', 'conversation.assigned',
  'conversation.resolved', 'message.*', 'message.created', 'message.status', 'contact.updated', 'sla.*', 'sla.warning', 'sla.breached'];

export async function render(host) {
  let endpoints = [];
  const formHost = h('div', { class: 'form-host' });
  const listHost = h('div');
  const deliveriesHost = h('div');
  const newButton = h('button', { type: 'button', class: 'primary', id: 'new-webhook', onclick: () => endpointForm(null) }, 'New endpoint');
  host.append(sectionHead('Outbound webhooks', newButton),
    h('p', { class: 'lead' }, 'Switchboard POSTs signed events (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) to your endpoints, at least once, retrying for over a day.'),
    formHost, listHost, deliveriesHost);

  async function reload() {
    endpoints = await fetchAll('/v1/admin/webhook-endpoints');
    clear(listHost);
    listHost.appendChild(card('Endpoints', table([
      { label: 'URL', cell: (e) => [h('code', { class: 'break' }, e.url), e.description ? h('div', { class: 'muted' }, e.description) : null] },
      { label: 'Events', cell: (e) => e.event_types.join(', ') },
      { label: 'Status', cell: (e) => [e.enabled ? badge('enabled', 'ok') : badge('disabled', 'muted'), e.ordered ? [' ', badge('ordered')] : null,
        e.disabled_reason ? h('div', { class: 'muted' }, e.disabled_reason) : null,
        e.consecutive_failures ? h('div', { class: 'muted' }, `${e.consecutive_failures} failures in a row`) : null] },
      { label: 'Created', cell: (e) => fmtTime(e.created_at_ms) },
      { label: 'Actions', cell: (e) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn-small', onclick: () => toggle(e), 'aria-label': `${e.enabled ? 'Disable' : 'Enable'} ${e.url}` }, e.enabled ? 'Disable' : 'Enable'),
        h('button', { type: 'button', class: 'btn-small', disabled: !e.enabled, onclick: (ev) => test(e, ev.currentTarget), 'aria-label': `Send a test event to ${e.url}` }, 'Send test'),
        h('button', { type: 'button', class: 'btn-small', onclick: () => deliveries(e), 'aria-label': `Deliveries to ${e.url}` }, 'Deliveries'),
        h('button', { type: 'button', class: 'btn-small', onclick: () => endpointForm(e), 'aria-label': `Edit ${e.url}` }, 'Edit'),
        h('button', { type: 'button', class: 'btn-small', onclick: () => rotate(e), 'aria-label': `Rotate the secret of ${e.url}` }, 'Rotate secret'),
        h('button', { type: 'button', class: 'btn-small danger', onclick: () => remove(e), 'aria-label': `Delete ${e.url}` }, 'Delete')) },
    ], endpoints, { caption: 'Webhook endpoints', empty: 'No endpoints yet.' })));
  }

  function endpointForm(e) {
    const f = form({
      title: e ? 'Edit endpoint' : 'New endpoint', id: 'webhook-form', submitLabel: e ? 'Save endpoint' : 'Create endpoint',
      onCancel: () => clear(formHost),
      fields: [
        { name: 'url', label: 'URL', type: 'url', value: e ? e.url : '', required: true, attrs: { autocomplete: 'off', placeholder: 'https://crm.example.com/hooks/switchboard', maxlength: 2048 }, hint: 'HTTPS; private and loopback addresses are refused unless allow-listed.',
          check: (v) => { try { const u = new URL(v); return /^https?:$/.test(u.protocol) ? (u.username || u.password ? 'No credentials in the URL.' : undefined) : 'An http(s) URL.'; } catch { return 'A full URL, like https://example.com/hook.'; } } },
        { name: 'event_types', label: 'Events', type: 'checkboxes', options: EVENT_TYPES.map((t) => [t, t === '*' ? '* (everything)' : t]), value: e ? e.event_types : ['*'], required: true, requiredMessage: 'Choose at least one event type.' },
        { name: 'description', label: 'Description', value: e ? e.description : '', attrs: { maxlength: 500 }, check: (v) => ([...v].length <= 500 ? undefined : 'At most 500 characters.') },
        { name: 'ordered', label: 'Deliver in event order (each waits for the one before)', type: 'checkbox', value: e ? e.ordered : false },
      ],
      onSubmit: async (v) => {
        const body = { url: v.url.trim(), event_types: v.event_types, description: v.description.trim(), ordered: v.ordered };
        if (e) {
          await api('PATCH', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}`, body);
          toast('Endpoint saved');
          clear(formHost);
        } else {
          const out = await api('POST', '/v1/admin/webhook-endpoints', body, { idempotencyKey: crypto.randomUUID() });
          showSecret('Endpoint created', out.secret);
        }
        await reload();
      },
    });
    showForm(formHost, f);
  }

  function showSecret(title, secret, extra) {
    clear(formHost);
    formHost.appendChild(h('section', { class: 'card key-once', role: 'alert' },
      h('h2', {}, title),
      h('p', { class: 'notice warn' }, 'Copy the signing secret now: it is shown this once. Verify webhook-signature with it (the standardwebhooks libraries do).'),
      copyable(secret, 'Signing secret'),
      extra || null,
      h('div', { class: 'actions' }, h('button', { type: 'button', class: 'primary', onclick: () => clear(formHost) }, 'I have stored it'))));
    formHost.querySelector('.copyable button').focus();
  }

  async function toggle(e) {
    try {
      await api('PATCH', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}`, { enabled: !e.enabled });
      toast(e.enabled ? 'Endpoint disabled' : 'Endpoint enabled: it starts from the current event');
      await reload();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  async function test(e, button) {
    await busy(button, async () => {
      try {
        await api('POST', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}/test`);
        toast('Test event queued');
        await deliveries(e);
      } catch (err) { toast(humanError(err), 'error'); }
    });
  }

  async function rotate(e) {
    if (!await confirmDialog('Rotate the signing secret? The previous one keeps signing beside the new one for the configured overlap (a day by default).', { okLabel: 'Rotate' })) return;
    try {
      const out = await api('POST', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}/rotate-secret`, {});
      showSecret('New signing secret', out.secret, h('p', { class: 'hint' }, `The previous secret signs too until ${fmtTime(out.previous_secret_until_ms)}.`));
    } catch (err) { toast(humanError(err), 'error'); }
  }

  async function remove(e) {
    if (!await confirmDialog(`Delete the endpoint ${e.url} and its deliveries?`, { okLabel: 'Delete', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}`);
      toast('Endpoint deleted');
      clear(deliveriesHost);
      await reload();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  async function deliveries(e) {
    clear(deliveriesHost);
    try {
      const page = await api('GET', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}/deliveries`, undefined, { query: { limit: 50 } });
      deliveriesHost.appendChild(card(`Deliveries to ${e.url}`, table([
        { label: 'Created', cell: (d) => fmtTime(d.created_at_ms) },
        { label: 'Event', cell: (d) => h('code', {}, d.event_type) },
        { label: 'State', cell: (d) => badge(d.state, { succeeded: 'ok', failed: 'danger', due: 'warn' }[d.state] || '') },
        { label: 'Attempts', class: 'num', cell: (d) => String(d.attempts) },
        { label: 'Last answer', cell: (d) => (d.response_status ? `HTTP ${d.response_status}` : d.last_error || '—') },
        { label: 'Next attempt', cell: (d) => (d.state === 'due' ? fmtTime(d.next_attempt_at_ms) : '—') },
        { label: 'Actions', cell: (d) => ((d.state === 'succeeded' || d.state === 'failed')
          ? h('button', { type: 'button', class: 'btn-small', 'aria-label': `Replay delivery ${d.id}`, onclick: async () => {
            try { await api('POST', `/v1/admin/webhook-endpoints/${encodeURIComponent(e.id)}/deliveries/${encodeURIComponent(d.id)}/replay`); toast('Replay queued'); await deliveries(e); } catch (err) { toast(humanError(err), 'error'); }
          } }, 'Replay')
          : '—') },
      ], page.data || [], { caption: 'Deliveries', empty: 'No deliveries yet.' })));
      deliveriesHost.querySelector('h2').tabIndex = -1;
      deliveriesHost.querySelector('h2').focus();
    } catch (err) {
      deliveriesHost.appendChild(h('p', { class: 'form-error', role: 'alert' }, humanError(err)));
    }
  }

  await reload();
  return { shortcuts: { n: () => endpointForm(null) } };
}
