// The right pane: who the customer is (identities on every channel), their earlier
// conversations, and the open conversation's SLA clocks (live `sla.warning` / `sla.breached`
// refetch them; a one-second tick counts down).

import { api, h, humanError } from '/ui/shared/api.js';
import { state, on, openConversation, mergeConversation } from './state.js';
import {
  channelName, contactName, shortTime, fullTime, duration, kids, snoozedText,
} from './util.js';

let els = null;
let ctx = null;
const METRICS = {
  first_response: 'First response',
  next_response: 'Next response',
  resolution: 'Resolution',
};
const KINDS = {
  whatsapp_wa_id: 'WhatsApp', whatsapp_bsuid: 'WhatsApp user', phone: 'Phone / SMS', web_visitor: 'Web chat',
};
/** contact id → {at, list} earlier conversations, read at most once a minute. */
const history = new Map();

export function mountPanel(root, context) {
  ctx = context;
  const close = h('button', { type: 'button', class: 'ghost only-medium panel-back', onclick: () => ctx.hidePanel() }, '← Back to the conversation');
  const contact = h('section', { class: 'panel-section', 'aria-labelledby': 'contact-h' },
    h('h2', { id: 'contact-h' }, 'Contact'), h('div', { id: 'contact-body' }));
  const sla = h('section', { class: 'panel-section', 'aria-labelledby': 'sla-h' },
    h('h2', { id: 'sla-h' }, 'SLA'), h('div', { id: 'sla-body' }));
  const earlier = h('section', { class: 'panel-section', 'aria-labelledby': 'earlier-h' },
    h('h2', { id: 'earlier-h' }, 'Earlier conversations'), h('div', { id: 'earlier-body' }));
  const empty = h('p', { class: 'muted panel-empty' }, 'Open a conversation to see the contact and its SLA.');
  root.append(close, empty, contact, sla, earlier);
  els = {
    empty, contact, sla, earlier,
    contactBody: contact.querySelector('#contact-body'),
    slaBody: sla.querySelector('#sla-body'),
    earlierBody: earlier.querySelector('#earlier-body'),
  };
  on('conversation', renderContact);
  on('sla', renderSla);
  renderContact();
}

/**
 * Loads what the panel shows for the open conversation. The contact (with its identities)
 * comes with the conversation's detail, which opening it reads.
 */
export async function loadPanel() {
  const conv = openConversation();
  if (!conv) return;
  renderContact();
  await Promise.all([loadSla(conv.id), loadEarlier(conv)]);
}

export async function loadSla(id) {
  try {
    const sla = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/sla`);
    state.sla.set(id, sla);
  } catch (err) {
    state.sla.set(id, { error: humanError(err) });
  }
  if (id === state.openId) renderSla();
}

function renderContact() {
  const conv = openConversation();
  const show = !!conv;
  els.empty.hidden = show;
  els.contact.hidden = !show;
  els.sla.hidden = !show;
  els.earlier.hidden = !show;
  if (!conv) return;
  const c = state.contacts.get(conv.contact_id);
  if (!c) {
    els.contactBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    renderEarlier();
    return;
  }
  const rows = [];
  const add = (label, value) => { if (value) rows.push(h('dt', {}, label), h('dd', {}, value)); };
  add('Name', c.name || '—');
  add('Phone', c.phone);
  add('Email', c.email);
  add('Customer since', shortTime(c.created_at_ms));
  const ids = (c.identities || []).map((i) => h('li', {},
    h('span', { class: 'badge' }, KINDS[i.kind] || i.kind), ' ', h('span', { class: 'identity' }, i.value)));
  els.contactBody.replaceChildren(...kids(
    h('p', { class: 'contact-name' }, contactName(c)),
    c.erased_at_ms ? h('p', { class: 'muted' }, 'This contact’s personal data was erased.') : null,
    h('dl', { class: 'facts' }, rows),
    h('h3', {}, 'Identities'),
    ids.length ? h('ul', { class: 'identities' }, ids)
      : h('p', { class: 'muted' }, c.identities ? 'None on record.' : 'Loading…')));
  renderEarlier();
}

function renderSla() {
  const conv = openConversation();
  if (!conv) return;
  const sla = state.sla.get(conv.id);
  if (!sla) { els.slaBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…')); return; }
  if (sla.error) { els.slaBody.replaceChildren(h('p', { class: 'muted' }, sla.error)); return; }
  if (!sla.policy_id || !sla.clocks.length) {
    els.slaBody.replaceChildren(h('p', { class: 'muted' }, sla.policy_id ? 'No clock is running.' : 'No SLA policy covers this conversation.'));
    return;
  }
  els.slaBody.replaceChildren(h('ul', { class: 'clocks' }, sla.clocks.map((clock) => h('li', {
    class: `clock clock-${clock.state}`,
  },
  h('span', { class: 'clock-metric' }, METRICS[clock.metric] || clock.metric),
  h('span', { class: `badge clock-state state-${clock.state}` }, clock.state),
  h('span', {
    class: 'clock-left',
    'data-due-ms': clock.stopped_at_ms ? null : String(clock.due_at_ms),
    title: `Due ${fullTime(clock.due_at_ms)}`,
  }, clockText(clock))))));
}

function clockText(clock, now = Date.now()) {
  if (clock.stopped_at_ms) {
    return clock.state === 'met' ? `met at ${shortTime(clock.stopped_at_ms)}` : `stopped ${shortTime(clock.stopped_at_ms)}, late`;
  }
  const left = clock.due_at_ms - now;
  return left >= 0 ? `due in ${duration(left)}` : `overdue by ${duration(-left)}`;
}

/** The one-second tick: SLA countdowns. */
export function tickPanel(now) {
  if (!els) return;
  for (const el of els.slaBody.querySelectorAll('[data-due-ms]')) {
    const due = Number(el.dataset.dueMs);
    const left = due - now;
    el.textContent = left >= 0 ? `due in ${duration(left)}` : `overdue by ${duration(-left)}`;
  }
}

/** The contact's other conversations in scope (`contact=`), most recently active first. */
async function loadEarlier(conv) {
  const cached = history.get(conv.contact_id);
  if (cached && Date.now() - cached.at < 60000) { renderEarlier(); return; }
  const found = new Map();
  try {
    let cursor;
    for (let i = 0; i < 3; i++) {
      const query = { contact: conv.contact_id, sort: 'last_activity', limit: 100 };
      if (cursor) query.cursor = cursor;
      const page = await api('GET', '/v1/conversations', undefined, { query });
      for (const c of page.data) found.set(c.id, mergeConversation(c));
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    history.set(conv.contact_id, { at: Date.now(), list: Array.from(found.values()) });
  } catch {
    for (const c of state.convs.values()) if (c.contact_id === conv.contact_id) found.set(c.id, c);
    history.set(conv.contact_id, { at: 0, list: Array.from(found.values()) });
  }
  renderEarlier();
}

function renderEarlier() {
  const conv = openConversation();
  if (!conv) return;
  const known = history.get(conv.contact_id);
  if (!known) { els.earlierBody.replaceChildren(h('p', { class: 'muted' }, 'Loading…')); return; }
  const others = known.list.filter((c) => c.id !== conv.id)
    .sort((a, b) => b.last_message_at_ms - a.last_message_at_ms);
  if (!others.length) {
    els.earlierBody.replaceChildren(h('p', { class: 'muted' }, 'None in your scope.'));
    return;
  }
  els.earlierBody.replaceChildren(h('ul', { class: 'earlier' }, others.map((c) => h('li', {},
    h('a', { href: `#/conversations/${c.id}`, 'data-earlier-id': c.id },
      `${channelName(c.channel)} · ${c.status} · ${shortTime(c.last_message_at_ms)}`),
    c.status === 'snoozed' ? h('span', { class: 'muted small' }, ` (${snoozedText(c)})`) : null))));
}

/** A live frame changed or created a conversation: keep the contact's history in step. */
export function noteConversation(conv) {
  const known = conv && history.get(conv.contact_id);
  if (!known) return;
  known.list = known.list.filter((c) => c.id !== conv.id).concat([conv]);
  const open = openConversation();
  if (open && open.contact_id === conv.contact_id) renderEarlier();
}
