// Channels: inboxes with masked credentials, the webhook URLs to paste into each provider's
// dashboard with step-by-step instructions, and the create / edit forms.
import { api, humanError, can } from '/ui/shared/api.js';
import { h, clear, toast, fetchAll, fetchIf, teamsList, sectionHead, card, table, badge, confirmDialog, copyable, CHANNEL_LABEL, fmtTime } from '../util.js';
import { form, showForm, isSlug, isE164 } from '../forms.js';

/**
 * The addresses a provider calls for an inbox, as the hub builds them from its
 * `server.public_url` (`inbox.webhook_urls`): never from this page's own address, which can be
 * an internal name or a port-forward that providers cannot reach (and Twilio signs the exact
 * URL it calls).
 */
export function webhookUrls(inbox) {
  const given = (inbox && inbox.webhook_urls) || {};
  switch (inbox.channel) {
    case 'whatsapp': return given.callback ? { callback: given.callback } : {};
    case 'sms': return given.incoming ? { incoming: given.incoming, status: given.status || '' } : {};
    case 'webchat': return given.widget_script ? { script: given.widget_script } : {};
    default: return {};
  }
}

function instructions(inbox) {
  const urls = webhookUrls(inbox);
  const steps = (...items) => h('ol', { class: 'howto' }, items.map((i) => h('li', {}, i)));
  const shown = Object.values(urls)[0] || '';
  if (!shown) {
    return h('div', { class: 'connect', 'data-inbox': inbox.slug },
      h('p', { class: 'notice warn' }, inbox.channel === 'whatsapp' && !inbox.whatsapp_app
        ? 'This WhatsApp inbox names no Meta app (whatsapp_app), so it has no callback URL.'
        : 'The hub did not return this inbox\'s webhook addresses; reload the page to try again.'));
  }
  const local = /(\/\/|")(localhost|127\.|\[::1\])/.test(shown);
  const warn = local
    ? h('p', { class: 'notice warn' }, 'These URLs point at this machine (localhost), which providers on the internet cannot reach. Set the hub\'s public HTTPS address (server.public_url): these URLs follow it.')
    : null;
  if (inbox.channel === 'whatsapp') {
    return h('div', { class: 'connect', 'data-inbox': inbox.slug },
      h('h3', {}, 'Connect in Meta\'s App Dashboard'),
      copyable(urls.callback, 'Callback URL'),
      steps(
        'Open developers.facebook.com → your app → WhatsApp → Configuration.',
        ['Under "Webhook", choose Edit and paste the Callback URL above.'],
        ['In "Verify token", type the verify_token of the ', h('code', {}, `[[whatsapp_apps]] name = "${inbox.whatsapp_app}"`), ' entry in the hub\'s configuration; choose "Verify and save" (the hub answers Meta\'s check).'],
        ['Under "Webhook fields", subscribe to ', h('code', {}, 'messages'), '.'],
        ['Check that the phone number id (', h('code', {}, inbox.phone_number_id || '—'), ') is the number\'s id under WhatsApp → API Setup, and that the access token stored here is a permanent system-user token with whatsapp_business_messaging.'],
        'Send a message to the number from a phone: a conversation appears in the agent workspace.'),
      h('p', { class: 'hint' }, 'Meta signs every webhook with the app secret of that config entry; unsigned or wrongly signed calls are refused.'),
      warn);
  }
  if (inbox.channel === 'sms') {
    return h('div', { class: 'connect', 'data-inbox': inbox.slug },
      h('h3', {}, 'Connect in the Twilio Console'),
      h('div', { class: 'url-label' }, '"A message comes in" URL'),
      copyable(urls.incoming, '"A message comes in" URL'),
      h('div', { class: 'url-label' }, 'Status callback URL'),
      copyable(urls.status, 'Status callback URL'),
      steps(
        ['Open console.twilio.com → Phone Numbers → Manage → Active numbers → ', h('code', {}, inbox.phone_number || 'your number'), '.'],
        'Under "Messaging configuration", set "A message comes in" to Webhook, paste the first URL, method HTTP POST.',
        'Paste the status callback URL in "Status callback URL" (the hub also asks for it on every reply it sends).',
        'Save configuration, then text the number: a conversation appears in the agent workspace.'),
      h('p', { class: 'hint' }, 'Twilio signs the exact URL it calls with the auth token stored here; the hub checks the signature against its public URL (server.public_url), so the URL in Twilio must be exactly this one.'),
      warn);
  }
  if (inbox.channel === 'webchat') {
    return h('div', { class: 'connect', 'data-inbox': inbox.slug },
      h('h3', {}, 'Add the chat widget to your website'),
      copyable(urls.script, 'Widget script tag'),
      steps(
        ['Paste the tag above into every page that should show the chat, just before ', h('code', {}, '</body>'), '.'],
        'Reload the page: a chat button appears in the corner. Write a message: a conversation appears in the agent workspace.',
        inbox.credentials_hint && inbox.credentials_hint.identity_secret
          ? 'Signed-in visitors: this inbox has an identity secret, so your server can vouch for a visitor with an identity hash (HMAC-SHA256 of their id with the secret).'
          : 'Optional: give the inbox an identity secret (Edit) to let your server vouch for signed-in visitors.'),
      warn);
  }
  return h('p', {}, 'Unknown channel.');
}

export async function render(host) {
  let inboxes = [];
  let teams = [];
  let branches = [];
  /** `GET /v1/admin/whatsapp-apps` ({name, callback_url}); null when it could not be read. */
  let whatsappApps = null;
  const branchesReadable = () => can('manage_users');
  const formHost = h('div', { class: 'form-host' });
  const listHost = h('div');
  const newButton = h('button', { type: 'button', class: 'primary', id: 'new-inbox', onclick: () => createForm() }, 'New inbox');
  host.append(sectionHead('Channels', newButton),
    h('p', { class: 'lead' }, 'Each inbox is one WhatsApp number, Twilio number or web-chat widget. Open "Connect" for the exact URL to paste into the provider.'),
    formHost, listHost);

  const teamName = (id) => (id ? (teams.find((t) => t.id === id) || {}).name || id : '—');
  const teamOptions = () => [['', '— none —'], ...teams.filter((t) => t.active).map((t) => [t.id, t.name])];
  const branchOptions = () => [['', '— none —'], ...branches.filter((b) => b.active).map((b) => [b.id, b.name])];

  async function reload() {
    inboxes = await fetchAll('/v1/admin/inboxes');
    renderList();
  }

  function hints(i) {
    const entries = Object.entries(i.credentials_hint || {});
    if (!entries.length) return h('span', { class: 'muted' }, 'none stored');
    return h('ul', { class: 'hints' }, entries.map(([k, v]) => h('li', {}, h('code', {}, k), ' ', h('span', { class: 'mono' }, v))));
  }

  function renderList() {
    clear(listHost);
    if (!inboxes.length) {
      listHost.appendChild(card('Inboxes', h('p', { class: 'empty' }, 'No inboxes yet. Create one to connect WhatsApp, SMS or your website.')));
      return;
    }
    const list = h('ul', { class: 'inbox-list' });
    for (const i of inboxes) {
      const details = h('details', { class: 'connect-details', 'data-inbox-slug': i.slug },
        h('summary', {}, `Connect ${i.name}`), instructions(i));
      list.appendChild(h('li', { class: ['card', 'inbox', !i.active && 'inactive'], 'data-inbox-id': i.id },
        h('div', { class: 'inbox-head' },
          h('h2', {}, i.name),
          badge(CHANNEL_LABEL[i.channel] || i.channel, i.channel),
          i.active ? null : badge('deactivated', 'muted'),
          i.managed_by === 'config' ? badge('from config', 'muted') : null),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Slug'), h('dd', {}, h('code', {}, i.slug)),
          i.channel === 'whatsapp' ? [h('dt', {}, 'Phone number id'), h('dd', {}, i.phone_number_id || '—'), h('dt', {}, 'Meta app (config)'), h('dd', {}, i.whatsapp_app || '—')] : null,
          i.channel === 'sms' ? [h('dt', {}, 'Number'), h('dd', {}, i.phone_number || '—')] : null,
          h('dt', {}, 'Team'), h('dd', {}, teamName(i.team_id)),
          h('dt', {}, 'Credentials'), h('dd', {}, hints(i)),
          h('dt', {}, 'Updated'), h('dd', {}, fmtTime(i.updated_at_ms))),
        details,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn-small', onclick: () => editForm(i), 'aria-label': `Edit inbox ${i.name}` }, 'Edit'),
          i.active ? h('button', { type: 'button', class: 'btn-small danger', onclick: () => deactivate(i), 'aria-label': `Deactivate inbox ${i.name}` }, 'Deactivate') : null)));
    }
    listHost.appendChild(list);
  }

  function credentialFields(channel, editing) {
    const keep = editing ? ' Leave empty to keep the stored one.' : '';
    return [
      { name: 'credentials.access_token', label: 'Access token', type: 'password', channel: 'whatsapp', required: !editing, attrs: { autocomplete: 'off' }, hint: `A permanent system-user token with whatsapp_business_messaging; stored sealed, shown masked.${keep}` },
      { name: 'credentials.twilio_account_sid', label: 'Twilio Account SID', channel: 'sms', attrs: { autocomplete: 'off', placeholder: 'AC…' }, check: (v) => (!v || /^AC[0-9a-fA-F]{32}$/.test(v) ? undefined : 'An Account SID is AC followed by 32 hex digits.'), hint: editing ? 'Leave empty to keep the stored one.' : undefined },
      { name: 'credentials.twilio_auth_token', label: 'Twilio Auth Token', type: 'password', channel: 'sms', required: !editing, attrs: { autocomplete: 'off' }, hint: `Twilio signs its webhooks with it.${keep}` },
      { name: 'credentials.identity_secret', label: 'Identity secret (optional)', type: 'password', channel: 'webchat', attrs: { autocomplete: 'off' }, hint: `Lets your server vouch for signed-in visitors.${keep}` },
    ].filter((f) => !channel || f.channel === channel);
  }

  function credentialsOf(v, channel) {
    const out = {};
    for (const f of credentialFields(channel, true)) {
      const key = f.name.split('.')[1];
      if (v[f.name]) out[key] = v[f.name];
    }
    return out;
  }

  /** The Meta app field: a select of the configured apps, free text if they could not be read. */
  function whatsappAppField() {
    const base = { name: 'whatsapp_app', label: 'Meta app (config entry)', channel: 'whatsapp', required: true };
    if (!whatsappApps) {
      const apps = [...new Set(inboxes.filter((i) => i.whatsapp_app).map((i) => i.whatsapp_app))];
      return {
        ...base, value: apps[0] || '', attrs: { autocomplete: 'off', id: 'inbox-whatsapp-app' },
        hint: 'The name of a [[whatsapp_apps]] entry in the hub\'s configuration (the list of apps could not be read).',
        check: (v) => (/^[\w.-]{1,64}$/.test(v) ? undefined : 'The name of a configured whatsapp_apps entry.'),
      };
    }
    if (!whatsappApps.length) {
      return {
        ...base, type: 'select', options: [['', '— no app configured —']], value: '', attrs: { id: 'inbox-whatsapp-app' },
        hint: 'No [[whatsapp_apps]] entry is configured for this account: add one (name, app secret, verify token) to the hub\'s configuration and restart it.',
        requiredMessage: 'Configure a WhatsApp app first.',
      };
    }
    return {
      ...base, type: 'select', value: whatsappApps[0].name, attrs: { id: 'inbox-whatsapp-app' },
      options: whatsappApps.map((a) => [a.name, a.name]),
      hint: 'A [[whatsapp_apps]] entry of the hub\'s configuration: Meta signs webhooks with its app secret, and its verify token answers Meta\'s check.',
    };
  }

  function createForm() {
    const fields = [
      { name: 'channel', label: 'Channel', type: 'select', options: [['whatsapp', 'WhatsApp (Meta Cloud API)'], ['sms', 'SMS (Twilio)'], ['webchat', 'Web chat widget']], value: 'whatsapp', attrs: { id: 'inbox-channel' } },
      { name: 'name', label: 'Name', required: true, attrs: { maxlength: 200, autocomplete: 'off', id: 'inbox-name', placeholder: 'Support (WhatsApp)' } },
      { name: 'slug', label: 'Slug', required: true, attrs: { maxlength: 64, autocomplete: 'off', id: 'inbox-slug', placeholder: 'support-wa' }, hint: 'Lowercase letters, digits, - and _; it appears in webhook URLs and cannot change.', check: (v) => (isSlug(v) ? undefined : 'Use 1 to 64 lowercase letters, digits, - and _.') },
      { name: 'phone_number_id', label: 'Phone number id', channel: 'whatsapp', required: true, attrs: { inputmode: 'numeric', autocomplete: 'off' }, hint: 'Meta\'s numeric id of the number (WhatsApp → API Setup), not the phone number.', check: (v) => (/^\d{1,64}$/.test(v) ? undefined : 'Meta\'s phone number id is digits only.') },
      whatsappAppField(),
      { name: 'phone_number', label: 'Phone number', channel: 'sms', required: true, attrs: { type: 'tel', autocomplete: 'off', placeholder: '+14155550100' }, hint: 'The Twilio number in E.164.', check: (v) => (isE164(v) ? undefined : 'E.164, like +14155550100.') },
      ...credentialFields(null, false),
      { name: 'team_id', label: 'Team', type: 'select', options: teamOptions(), hint: 'Conversations of this inbox belong to the team; the default routing rule sends them there.' },
      branchesReadable() ? { name: 'branch_id', label: 'Branch', type: 'select', options: branchOptions() } : null,
    ].filter(Boolean);
    const f = form({
      title: 'New inbox', id: 'new-inbox-form', submitLabel: 'Create inbox', fields, onCancel: () => clear(formHost),
      onSubmit: async (v) => {
        const body = { channel: v.channel, name: v.name.trim(), slug: v.slug.trim() };
        if (v.channel === 'whatsapp') { body.phone_number_id = v.phone_number_id.trim(); body.whatsapp_app = v.whatsapp_app.trim(); }
        if (v.channel === 'sms') body.phone_number = v.phone_number.trim();
        const creds = credentialsOf(v, v.channel);
        if (Object.keys(creds).length) body.credentials = creds;
        if (v.team_id) body.team_id = v.team_id;
        if (v.branch_id) body.branch_id = v.branch_id;
        const created = await api('POST', '/v1/admin/inboxes', body, { idempotencyKey: crypto.randomUUID() });
        toast(`Inbox ${created.name} created`);
        clear(formHost);
        await reload();
        const d = listHost.querySelector(`details[data-inbox-slug="${CSS.escape(created.slug)}"]`);
        if (d) { d.open = true; d.scrollIntoView(); d.querySelector('summary').focus(); }
      },
    });
    const byChannel = fields.filter((x) => x.channel);
    const sync = () => {
      const ch = f.controls.channel.focusable.value;
      for (const x of byChannel) f.controls[x.name].wrap.hidden = x.channel !== ch;
    };
    f.controls.channel.focusable.addEventListener('change', sync);
    sync();
    showForm(formHost, f);
  }

  function editForm(i) {
    const config = i.managed_by === 'config';
    const fields = [
      config ? null : { name: 'name', label: 'Name', value: i.name, required: true, attrs: { maxlength: 200, autocomplete: 'off' } },
      { name: 'team_id', label: 'Team', type: 'select', options: teamOptions(), value: i.team_id || '' },
      branchesReadable() ? { name: 'branch_id', label: 'Branch', type: 'select', options: branchOptions(), value: i.branch_id || '' } : null,
      { name: 'active', label: 'Active (a deactivated inbox answers webhooks as unknown)', type: 'checkbox', value: i.active },
      ...(config ? [] : credentialFields(i.channel, true)),
    ].filter(Boolean);
    showForm(formHost, form({
      title: `Edit inbox ${i.name}`, submitLabel: 'Save inbox', fields, onCancel: () => clear(formHost),
      intro: config ? h('p', { class: 'hint' }, 'This inbox is declared in the hub\'s configuration: its name, number and credentials come from there. Team, branch and active can change here.') : null,
      onSubmit: async (v) => {
        const body = {};
        if (!config && v.name.trim() !== i.name) body.name = v.name.trim();
        if ((v.team_id || null) !== (i.team_id || null)) body.team_id = v.team_id || null;
        if (branchesReadable() && (v.branch_id || null) !== (i.branch_id || null)) body.branch_id = v.branch_id || null;
        if (v.active !== i.active) body.active = v.active;
        if (!config) {
          const creds = credentialsOf(v, i.channel);
          if (Object.keys(creds).length) {
            // The API replaces credentials wholesale: an SMS inbox must send its token again.
            if (i.channel === 'sms' && !creds.twilio_auth_token) {
              const err = new Error('x');
              err.status = 422;
              err.details = [{ field: 'credentials.twilio_auth_token', message: 'Give the auth token too when replacing SMS credentials (they are replaced together).' }];
              throw err;
            }
            body.credentials = creds;
          }
        }
        if (Object.keys(body).length) await api('PATCH', `/v1/admin/inboxes/${encodeURIComponent(i.id)}`, body);
        toast(`Inbox ${i.name} saved`);
        clear(formHost);
        await reload();
      },
    }));
  }

  async function deactivate(i) {
    if (!await confirmDialog(`Deactivate ${i.name}? Its webhooks will be refused until it is active again; its conversations stay.`, { okLabel: 'Deactivate', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/inboxes/${encodeURIComponent(i.id)}`);
      toast(`${i.name} deactivated`);
      await reload();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  await Promise.all([
    reload(),
    teamsList().then((t) => { teams = t; }).catch(() => {}),
    fetchIf('manage_users', '/v1/admin/branches').then((b) => { branches = b; }).catch(() => {}),
    api('GET', '/v1/admin/whatsapp-apps').then((r) => { whatsappApps = r.data || []; }).catch(() => {}),
  ]);
  renderList();
  return { shortcuts: { n: createForm } };
}
