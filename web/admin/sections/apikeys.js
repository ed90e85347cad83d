// API keys: create (the key shown once, with a copy button and a warning), list, revoke.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, toast, sectionHead, card, table, fmtTime, badge, confirmDialog, copyable, fetchAll } from '../util.js';
import { form, showForm } from '../forms.js';

export async function render(host) {
  let keys = [];
  let roles = [];
  const formHost = h('div', { class: 'form-host' });
  const listHost = h('div');
  const newButton = h('button', { type: 'button', class: 'primary', id: 'new-api-key', onclick: () => createForm() }, 'New API key');
  host.append(sectionHead('API keys', newButton),
    h('p', { class: 'lead' }, 'Keys let other systems call the API with a role. A key is shown once, when it is created.'),
    formHost, listHost);

  const roleName = (id) => (roles.find((r) => r.id === id) || {}).name || id;

  async function reload() {
    keys = await fetchAll('/v1/admin/api-keys');
    clear(listHost);
    listHost.appendChild(card('Keys', table([
      { label: 'Name', cell: (k) => h('strong', {}, k.name) },
      { label: 'Key', cell: (k) => h('code', {}, `sbk_${k.prefix}_…`) },
      { label: 'Role', cell: (k) => roleName(k.role) },
      { label: 'Created', cell: (k) => fmtTime(k.created_at) },
      { label: 'Expires', cell: (k) => (k.expires_at ? fmtTime(k.expires_at) : 'never') },
      { label: 'Last used', cell: (k) => fmtTime(k.last_used_at) },
      { label: 'Status', cell: (k) => (k.revoked_at ? badge(`revoked ${fmtTime(k.revoked_at)}`, 'muted') : k.expires_at && k.expires_at < Date.now() ? badge('expired', 'warn') : badge('active', 'ok')) },
      { label: 'Actions', cell: (k) => (k.revoked_at ? '—' : h('button', { type: 'button', class: 'btn-small danger', 'aria-label': `Revoke key ${k.name}`, onclick: () => revoke(k) }, 'Revoke')) },
    ], keys, { caption: 'API keys', empty: 'No API keys yet.' })));
  }

  function createForm() {
    const f = form({
      title: 'New API key', id: 'new-api-key-form', submitLabel: 'Create key', onCancel: () => clear(formHost),
      fields: [
        { name: 'name', label: 'Name', required: true, attrs: { maxlength: 100, autocomplete: 'off', placeholder: 'crm' }, hint: 'What uses it, so you know what breaks when you revoke it.' },
        { name: 'role', label: 'Role', type: 'select', options: roles.map((r) => [r.id, r.builtin ? r.name : `${r.name} (custom)`]), value: 'operations' },
        { name: 'expires_at', label: 'Expires (optional)', type: 'datetime-local', hint: 'Empty: never expires.', check: (v) => (!v || new Date(v).getTime() > Date.now() ? undefined : 'Must be in the future.') },
      ],
      onSubmit: async (v) => {
        const body = { name: v.name.trim(), role: v.role };
        if (v.expires_at) body.expires_at = new Date(v.expires_at).toISOString();
        const created = await api('POST', '/v1/admin/api-keys', body, { idempotencyKey: crypto.randomUUID() });
        showKey(created);
        await reload();
      },
    });
    showForm(formHost, f);
  }

  function showKey(created) {
    clear(formHost);
    const done = h('button', { type: 'button', class: 'primary', onclick: () => { clear(formHost); newButton.focus(); } }, 'I have stored it');
    formHost.appendChild(h('section', { class: 'card key-once', role: 'alert', 'aria-labelledby': 'key-once-title', id: 'api-key-created' },
      h('h2', { id: 'key-once-title' }, `Key "${created.name}" created`),
      h('p', { class: 'notice warn' }, 'Copy this key now and keep it somewhere safe. It will not be shown again: Switchboard stores only a hash of it.'),
      copyable(created.key, 'API key'),
      h('div', { class: 'actions' }, done)));
    formHost.querySelector('.copyable button').focus();
  }

  async function revoke(k) {
    if (!await confirmDialog(`Revoke the key "${k.name}"? Calls with it are refused from the next request.`, { okLabel: 'Revoke', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/api-keys/${encodeURIComponent(k.id)}`);
      toast(`Key ${k.name} revoked`);
      await reload();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  roles = await api('GET', '/v1/admin/roles').then((p) => p.data || []).catch(() => []);
  await reload();
  return { shortcuts: { n: createForm } };
}
