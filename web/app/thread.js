// The middle pane: the open conversation's header with its actions (assign to me, reassign,
// resolve, snooze, reopen, priority, labels) and its messages with channel, direction, author, time and
// delivery status. Message items carry `data-message-id`, `data-status` and `data-direction`
// (test hooks). The reply box is composer.js.

import { api, h, can, humanError, ApiError } from '/ui/shared/api.js';
import {
  state, on, emit, openConversation, agentName, sortedMessages, placeInList, mergeConversation,
  loadAssignable,
} from './state.js';
import {
  channelName, contactName, shortTime, fullTime, isoTime, contentText, failureReason, duration,
  windowClosed, WHATSAPP_WINDOW_MS, kids, snoozedText, snoozePresets, localInputValue,
  MAX_SNOOZE_MS, dayTime,
} from './util.js';

let els = null;
let ctx = null;

const STATUS_LABEL = {
  pending: 'Sending…',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  failed: 'Failed',
  received: 'Received',
  note: 'Private note',
};
const STATUS_MARK = { pending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '⚠' };

/**
 * Builds the conversation view inside `root` (the `main`). `context` gives `announce(text)`,
 * `toast(text, kind)`, `back()`, `showPanel()`, `open(id)`.
 */
export function mountThread(root, context) {
  ctx = context;
  const title = h('h1', { id: 'thread-title', class: 'thread-title', tabindex: '-1' });
  const sub = h('p', { class: 'thread-sub', id: 'thread-sub' });
  const windowNote = h('p', { class: 'thread-window', id: 'thread-window' });
  const assignMe = h('button', { id: 'assign-me', type: 'button', 'aria-keyshortcuts': 'a', onclick: () => assignToMe() }, 'Assign to me');
  const resolve = h('button', { id: 'resolve', type: 'button', class: 'primary', 'aria-keyshortcuts': 'e', onclick: () => resolveOpen() }, 'Resolve');
  const reopen = h('button', { id: 'reopen', type: 'button', 'aria-keyshortcuts': 'o', hidden: true, onclick: () => reopenOpen() }, 'Reopen');
  const snooze = buildSnooze();
  const more = buildMoreActions();
  const snoozedLine = h('p', { class: 'thread-snoozed', id: 'thread-snoozed', hidden: true });
  const conflictText = h('span', {});
  const conflictOpen = h('button', { type: 'button', id: 'reopen-conflict-open', class: 'btn-inline' }, 'Open that conversation');
  const conflict = h('p', { class: 'field-error reopen-conflict', id: 'reopen-conflict', role: 'alert', hidden: true },
    conflictText, ' ', conflictOpen);
  const back = h('button', { type: 'button', class: 'ghost only-narrow back-btn', onclick: () => ctx.back() }, '← Conversations');
  const details = h('button', { type: 'button', class: 'ghost only-medium details-btn', onclick: () => ctx.showPanel() }, 'Contact & SLA');
  const messages = h('ol', { id: 'messages', class: 'messages', 'aria-label': 'Messages', tabindex: '0' });
  const older = h('p', { class: 'muted messages-state', hidden: true });
  const typing = h('p', { id: 'typing-line', class: 'typing-line', 'aria-live': 'polite' });
  const actionError = h('p', { class: 'field-error', id: 'action-error', role: 'alert', hidden: true });
  const head = h('div', { class: 'thread-head' },
    h('div', { class: 'thread-nav' }, back, details),
    h('div', { class: 'thread-heading' }, title, sub, snoozedLine, windowNote),
    h('div', { class: 'thread-actions', role: 'group', 'aria-label': 'Conversation actions' },
      assignMe, resolve, reopen, snooze.root, more.root),
    actionError, conflict);
  const section = h('section', { id: 'thread', class: 'thread', hidden: true, 'aria-labelledby': 'thread-title' },
    head, older, messages, typing);
  const empty = h('div', { class: 'thread-empty', id: 'thread-empty' },
    h('h1', {}, 'No conversation open'),
    h('p', {}, 'Choose a conversation from the list, or press j to open the first one. Press ? for all keyboard shortcuts.'));
  root.append(empty, section);
  els = {
    title, sub, windowNote, snoozedLine, assignMe, resolve, reopen, snooze, more, messages, older,
    typing, actionError, conflict, conflictText, conflictOpen, section, empty,
  };
  on('conversation', renderHead);
  on('messages', renderMessages);
  on('typing', renderTyping);
}

/** The section the composer goes into. */
export function threadSection() {
  return els.section;
}

/** The snooze menu: presets (computed when it opens) and a custom date and time. */
function buildSnooze() {
  const presets = h('div', { class: 'snooze-presets', role: 'group', 'aria-labelledby': 'snooze-h' });
  const until = h('input', { id: 'snooze-until', type: 'datetime-local', 'aria-describedby': 'snooze-error' });
  const error = h('p', { class: 'field-error', id: 'snooze-error', hidden: true });
  const custom = h('form', { class: 'more-row', id: 'snooze-custom', novalidate: true, onsubmit: (e) => { e.preventDefault(); snoozeCustom(); } },
    h('label', { for: 'snooze-until' }, 'Until a date and time'), until,
    h('button', { type: 'submit', id: 'snooze-custom-btn' }, 'Snooze'), error);
  const root = h('details', {
    class: 'more-actions snooze-menu', id: 'snooze-menu',
    ontoggle: (e) => { if (e.target.open) fillSnooze(); },
  },
  h('summary', { class: 'ghost', id: 'snooze', 'aria-keyshortcuts': 's' }, 'Snooze'),
  h('div', { class: 'more-panel' },
    h('p', { class: 'more-label', id: 'snooze-h' }, 'Snooze until'),
    presets, custom,
    h('p', { class: 'muted small' }, 'It comes back (open) at that time, or at once when the customer writes.')));
  return { root, presets, until, error };
}

/** Fresh preset times each time the menu opens. */
function fillSnooze() {
  const s = els.snooze;
  clearError(s.error);
  s.until.removeAttribute('aria-invalid');
  const now = Date.now();
  s.until.min = localInputValue(now);
  s.until.max = localInputValue(now + MAX_SNOOZE_MS);
  if (!s.until.value || new Date(s.until.value).getTime() <= now) s.until.value = localInputValue(now + 3 * 3600 * 1000);
  s.presets.replaceChildren(...snoozePresets(new Date(now)).map((p) => h('button', {
    type: 'button', class: 'snooze-preset', 'data-snooze': p.id,
    onclick: () => snoozeUntil(p.until),
  }, h('span', { class: 'preset-label' }, p.label), h('span', { class: 'preset-time muted' }, dayTime(p.until)))));
}

/** The `s` shortcut: open the snooze menu, focus the first preset. */
export function openSnooze() {
  if (!els || els.snooze.root.hidden || els.section.hidden) return false;
  const more = els.more.root;
  if (more.open) more.open = false;
  els.snooze.root.open = true;
  fillSnooze();
  const first = els.snooze.presets.querySelector('button');
  if (first) first.focus();
  return true;
}

function buildMoreActions() {
  const reassignSel = h('select', { id: 'reassign-select' });
  const reassignBtn = h('button', { type: 'button', id: 'reassign', onclick: () => reassign(reassignSel.value) }, 'Reassign');
  const reassignErr = h('p', { class: 'field-error', hidden: true });
  const reassignRow = h('div', { class: 'more-row', id: 'reassign-row' },
    h('label', { for: 'reassign-select' }, 'Reassign to'), reassignSel, reassignBtn, reassignErr);

  const priority = h('input', { id: 'priority', type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric' });
  const priorityErr = h('p', { class: 'field-error', hidden: true, id: 'priority-error' });
  const priorityRow = h('form', { class: 'more-row', id: 'priority-row', novalidate: true, onsubmit: (e) => { e.preventDefault(); savePriority(); } },
    h('label', { for: 'priority' }, 'Priority (0–100)'), priority,
    h('button', { type: 'submit', }, 'Save'), priorityErr);

  const labelList = h('ul', { class: 'label-chips', 'aria-label': 'Labels' });
  const labelInput = h('input', { id: 'label-input', type: 'text', maxlength: '50', autocomplete: 'off' });
  const labelErr = h('p', { class: 'field-error', hidden: true, id: 'label-error' });
  const labelRow = h('form', { class: 'more-row', id: 'labels-row', novalidate: true, onsubmit: (e) => { e.preventDefault(); addLabel(); } },
    h('span', { class: 'more-label' }, 'Labels'), labelList,
    h('label', { for: 'label-input', class: 'visually-hidden' }, 'New label'), labelInput,
    h('button', { type: 'submit', }, 'Add label'), labelErr);

  const root = h('details', { class: 'more-actions' },
    h('summary', { class: 'ghost' }, 'More actions'),
    h('div', { class: 'more-panel' }, reassignRow, priorityRow, labelRow));
  return { root, reassignSel, reassignRow, reassignErr, priority, priorityErr, priorityRow, labelList, labelInput, labelErr, labelRow };
}

function showError(el, err) {
  el.textContent = typeof err === 'string' ? err : humanError(err);
  el.hidden = !el.textContent;
}

function clearError(el) { el.textContent = ''; el.hidden = true; }

/** Redraws the header and actions for the open conversation. */
export function renderHead() {
  const conv = openConversation();
  els.empty.hidden = !!conv;
  els.section.hidden = !conv;
  if (!conv) return;
  const contact = state.contacts.get(conv.contact_id);
  els.title.textContent = contact ? contactName(contact) : 'Conversation';
  const assignee = conv.assignee_id ? `assigned to ${agentName(conv.assignee_id)}`
    : conv.status === 'resolved' ? 'unassigned' : (conv.routing_state === 'offered' ? 'being offered to an agent' : 'waiting in the queue');
  els.sub.replaceChildren(...kids(
    h('span', { class: `badge badge-channel ch-${conv.channel}` }, channelName(conv.channel)), ' ',
    h('span', { class: `badge badge-status st-${conv.status}` }, conv.status), ' ',
    h('span', {}, assignee),
    conv.priority ? h('span', {}, ` · priority ${conv.priority}`) : null,
    (conv.labels || []).length ? h('span', {}, ' · ', conv.labels.map((l) => h('span', { class: 'badge badge-label' }, l))) : null));
  renderWindow(conv);
  const snoozed = snoozedText(conv);
  els.snoozedLine.hidden = !snoozed;
  els.snoozedLine.textContent = snoozed && conv.snoozed_until_ms ? `Snoozed until ${dayTime(conv.snoozed_until_ms)}` : snoozed;
  if (snoozed) els.snoozedLine.title = 'It opens again at that time, or when the customer writes.';
  if (conflictFor && conflictFor !== conv.id) hideConflict();

  const resolved = conv.status === 'resolved';
  const mayReassign = can('reassign_conversations');
  const mayReply = can('reply_to_customer');
  els.assignMe.hidden = !mayReassign || resolved || conv.assignee_id === state.me.id;
  els.resolve.hidden = !mayReply || resolved;
  els.reopen.hidden = !mayReply || !(resolved || conv.status === 'snoozed');
  els.snooze.root.hidden = !mayReply || resolved;
  if (els.snooze.root.hidden) els.snooze.root.open = false;
  els.snooze.root.querySelector('summary').textContent = conv.status === 'snoozed' ? 'Snooze again' : 'Snooze';

  const m = els.more;
  const assignable = state.assignable.get(conv.id);
  m.reassignRow.hidden = !mayReassign || resolved || !assignable;
  if (mayReassign && !resolved) refreshAssignable(conv.id);
  if (!m.reassignRow.hidden) {
    const current = m.reassignSel.value;
    const agents = assignable.list.slice().sort((a, b) => a.name.localeCompare(b.name));
    m.reassignSel.replaceChildren(
      ...agents.map((a) => h('option', { value: a.id, disabled: a.id === conv.assignee_id }, agentOption(a, conv))),
      h('option', { value: '', disabled: !conv.assignee_id }, 'Nobody: back to the queue'));
    if (current && m.reassignSel.querySelector(`option[value="${CSS.escape(current)}"]:not([disabled])`)) m.reassignSel.value = current;
  }
  m.priorityRow.hidden = !mayReassign;
  if (document.activeElement !== m.priority) m.priority.value = String(conv.priority ?? 0);
  m.labelRow.hidden = !mayReply;
  m.labelList.replaceChildren(...(conv.labels || []).map((label) => h('li', { class: 'chip' },
    h('span', {}, label),
    h('button', { type: 'button', class: 'chip-x', 'aria-label': `Remove label ${label}`, onclick: () => saveLabels((openConversation().labels || []).filter((l) => l !== label)) }, '×'))));
  m.root.hidden = m.reassignRow.hidden && m.priorityRow.hidden && m.labelRow.hidden;
}

/** "Ana (you) · online · 2/4 on WhatsApp": enough to choose whom to hand a conversation to. */
function agentOption(a, conv) {
  const name = a.id === state.me.id ? `${a.name} (you)` : a.name;
  const load = (a.load || {})[conv.channel] ?? 0;
  const cap = (a.capacity || {})[conv.channel] ?? 0;
  const current = a.id === conv.assignee_id ? ' · assigned now' : '';
  return `${name} · ${a.presence || 'offline'} · ${load}/${cap} on ${channelName(conv.channel)}${current}`;
}

const assignableWaits = new Map();

/** Reads (at most every 30 s) whom the caller may assign the conversation to, then redraws. */
function refreshAssignable(id) {
  const cached = state.assignable.get(id);
  if ((cached && Date.now() - cached.at < 30000) || assignableWaits.has(id)) return;
  const p = loadAssignable(id)
    .catch(() => { state.assignable.set(id, { at: Date.now(), list: [] }); })
    .then(() => { if (state.openId === id) renderHead(); })
    .finally(() => assignableWaits.delete(id));
  assignableWaits.set(id, p);
}

/** The WhatsApp 24-hour window, as a line under the title (refreshed by the clock). */
export function renderWindow(conv = openConversation()) {
  if (!conv || conv.channel !== 'whatsapp' || conv.status === 'resolved') {
    els.windowNote.hidden = true;
    return;
  }
  els.windowNote.hidden = false;
  if (windowClosed(conv)) {
    els.windowNote.textContent = '24-hour window closed: only approved templates can be sent.';
    els.windowNote.className = 'thread-window is-closed';
  } else {
    const left = conv.last_inbound_at_ms + WHATSAPP_WINDOW_MS - Date.now();
    els.windowNote.textContent = `24-hour window closes in ${duration(left)}.`;
    els.windowNote.className = `thread-window${left < 2 * 3600 * 1000 ? ' is-closing' : ''}`;
  }
}

async function act(fn) {
  clearError(els.actionError);
  try {
    return await fn();
  } catch (err) {
    showError(els.actionError, err);
    return null;
  }
}

function applyConversation(conv) {
  const merged = mergeConversation(conv);
  placeInList(merged);
  emit('list');
  emit('conversation');
  return merged;
}

export async function assignToMe() {
  const conv = openConversation();
  if (!conv || els.assignMe.hidden) return;
  const updated = await act(() => api('PUT', `/v1/conversations/${conv.id}/assignment`, { assignee_id: state.me.id }));
  if (updated) { applyConversation(updated); ctx.announce('Assigned to you.'); }
}

async function reassign(assigneeId) {
  const conv = openConversation();
  if (!conv) return;
  clearError(els.more.reassignErr);
  try {
    const updated = await api('PUT', `/v1/conversations/${conv.id}/assignment`, { assignee_id: assigneeId || null });
    applyConversation(updated);
    ctx.announce(assigneeId ? `Reassigned to ${agentName(assigneeId)}.` : 'Returned to the queue.');
  } catch (err) {
    showError(els.more.reassignErr, err instanceof ApiError ? (err.field('assignee_id') || humanError(err)) : err);
  }
}

/** Snoozes the open conversation until `until` (Unix ms). */
async function snoozeUntil(until) {
  const conv = openConversation();
  if (!conv) return;
  const s = els.snooze;
  clearError(s.error);
  const now = Date.now();
  if (!(until > now)) { showError(s.error, 'Choose a time in the future.'); return; }
  if (until > now + MAX_SNOOZE_MS) { showError(s.error, 'At most 90 days ahead.'); return; }
  try {
    const updated = await api('POST', `/v1/conversations/${conv.id}/snooze`, { until_ms: Math.round(until) });
    s.root.open = false;
    applyConversation(updated);
    ctx.announce(`Snoozed until ${dayTime(updated.snoozed_until_ms || until)}.`);
    s.root.querySelector('summary').focus();
  } catch (err) {
    if (err.status === 409) { applyFresh(conv.id); }
    showError(s.error, err instanceof ApiError ? (err.field('until_ms') || humanError(err)) : err);
  }
}

function snoozeCustom() {
  const s = els.snooze;
  clearError(s.error);
  const raw = s.until.value;
  const until = raw ? new Date(raw).getTime() : NaN;
  let problem = '';
  if (!raw || Number.isNaN(until)) problem = 'Enter a date and time.';
  else if (until <= Date.now()) problem = 'Choose a time in the future.';
  else if (until > Date.now() + MAX_SNOOZE_MS) problem = 'At most 90 days ahead.';
  if (problem) {
    showError(s.error, problem);
    s.until.setAttribute('aria-invalid', 'true');
    s.until.focus();
    return;
  }
  s.until.removeAttribute('aria-invalid');
  snoozeUntil(until);
}

/** Reads a conversation again after a refusal that says our copy is stale. */
function applyFresh(id) {
  api('GET', `/v1/conversations/${id}`).then(applyConversation).catch(() => {});
}

let conflictFor = null;

function hideConflict() {
  conflictFor = null;
  els.conflict.hidden = true;
}

/** Reopens the open conversation (resolved or snoozed); a 409 names the other open one. */
export async function reopenOpen() {
  const conv = openConversation();
  if (!conv || els.reopen.hidden) return;
  clearError(els.actionError);
  hideConflict();
  try {
    const updated = await api('POST', `/v1/conversations/${conv.id}/reopen`);
    applyConversation(updated);
    ctx.announce('Conversation reopened.');
    if (!els.resolve.hidden) els.resolve.focus();
  } catch (err) {
    const other = err.status === 409 && (err.details || []).map((d) => d && d.conversation_id).find(Boolean);
    if (!other) { showError(els.actionError, err); return; }
    conflictFor = conv.id;
    els.conflictText.textContent = 'This customer already has another open conversation in this inbox, so this one cannot be reopened.';
    els.conflictOpen.hidden = other === conv.id;
    els.conflictOpen.onclick = () => { hideConflict(); ctx.open(other); };
    els.conflictOpen.dataset.conversationTarget = other;
    els.conflict.hidden = false;
    els.conflictOpen.focus();
  }
}

export async function resolveOpen() {
  const conv = openConversation();
  if (!conv || els.resolve.hidden) return;
  const updated = await act(() => api('POST', `/v1/conversations/${conv.id}/resolve`));
  if (!updated) return;
  applyConversation(updated);
  ctx.announce('Conversation resolved.');
}

async function savePriority() {
  const conv = openConversation();
  const m = els.more;
  clearError(m.priorityErr);
  const raw = m.priority.value.trim();
  const n = Number(raw);
  if (raw === '' || !Number.isInteger(n) || n < 0 || n > 100) {
    showError(m.priorityErr, 'Enter a whole number from 0 to 100.');
    m.priority.setAttribute('aria-invalid', 'true');
    m.priority.focus();
    return;
  }
  m.priority.removeAttribute('aria-invalid');
  try {
    applyConversation(await api('PATCH', `/v1/conversations/${conv.id}`, { priority: n }));
    ctx.announce(`Priority set to ${n}.`);
  } catch (err) {
    showError(m.priorityErr, err instanceof ApiError ? (err.field('priority') || humanError(err)) : err);
  }
}

function addLabel() {
  const m = els.more;
  clearError(m.labelErr);
  const label = m.labelInput.value.trim();
  const labels = openConversation().labels || [];
  if (!label || label.length > 50) {
    showError(m.labelErr, 'A label is 1 to 50 characters.');
    m.labelInput.setAttribute('aria-invalid', 'true');
    return;
  }
  if (labels.includes(label)) { m.labelInput.value = ''; return; }
  if (labels.length >= 20) {
    showError(m.labelErr, 'A conversation has at most 20 labels.');
    return;
  }
  m.labelInput.removeAttribute('aria-invalid');
  saveLabels([...labels, label]).then((ok) => { if (ok) m.labelInput.value = ''; });
}

async function saveLabels(labels) {
  const conv = openConversation();
  const m = els.more;
  clearError(m.labelErr);
  try {
    applyConversation(await api('PATCH', `/v1/conversations/${conv.id}`, { labels }));
    return true;
  } catch (err) {
    showError(m.labelErr, err instanceof ApiError ? (err.field('labels') || humanError(err)) : err);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Messages

function safeUrl(url) {
  try {
    const u = new URL(url, location.href);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

/** Images are shown inline only from https or this origin (what the page's CSP admits). */
function showableImage(url) {
  const u = new URL(url);
  return u.protocol === 'https:' || u.origin === location.origin;
}

function attachmentView(att, who) {
  const url = att.url ? safeUrl(att.url) : null;
  const kind = att.kind || 'file';
  const label = att.filename || `${kind}${att.mime_type ? ` (${att.mime_type})` : ''}`;
  if (!url) {
    return h('li', { class: 'attachment is-missing' },
      `${label}: kept by the provider${att.provider_media_id ? ` (media id ${att.provider_media_id})` : ''}, no link to open.`);
  }
  if (kind === 'image' || kind === 'sticker') {
    if (showableImage(url)) {
      return h('li', { class: 'attachment' },
        h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' },
          h('img', { src: url, alt: `Image from ${who}${att.filename ? `: ${att.filename}` : ''}`, loading: 'lazy', class: 'thumb', referrerpolicy: 'no-referrer' })));
    }
  }
  return h('li', { class: 'attachment' },
    h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, `Open ${label}`));
}

function authorOf(msg) {
  if (msg.direction === 'inbound') {
    return contactName(state.contacts.get(openConversation()?.contact_id));
  }
  // The hub names the agent who wrote a reply or note; a reply sent with an API key has none.
  if (msg.author_name) return msg.author_name;
  return msg.author_id ? 'Former agent' : 'Sent through the API';
}

/** One message item (test hooks: data-message-id, data-status, data-direction). */
export function messageView(msg) {
  const conv = openConversation();
  const dir = msg.direction;
  const who = authorOf(msg);
  const text = contentText(msg.content);
  const status = msg.status;
  const reason = status === 'failed' ? failureReason(msg.error) : '';
  const body = [];
  if (msg.content && msg.content.type === 'media') {
    body.push(h('ul', { class: 'attachments', 'aria-label': 'Attachments' },
      (msg.content.attachments || []).map((a) => attachmentView(a, who))));
  }
  if (text) body.push(h('p', { class: `msg-text${msg.content && msg.content.type !== 'text' ? ' is-meta' : ''}` }, text));
  if (msg.content && msg.content.type === 'location' && msg.content.url && safeUrl(msg.content.url)) {
    body.push(h('a', { href: safeUrl(msg.content.url), target: '_blank', rel: 'noopener noreferrer' }, 'Open the location'));
  }
  const meta = h('p', { class: 'msg-meta' },
    h('span', { class: 'msg-author' }, dir === 'note' ? `${who} · private note` : who),
    h('span', { class: 'msg-channel' }, dir === 'note' ? 'internal' : channelName(conv ? conv.channel : '')),
    h('time', { datetime: isoTime(msg.sent_at_ms), title: fullTime(msg.sent_at_ms) }, shortTime(msg.sent_at_ms)),
    msg.forwarded ? h('span', {}, 'forwarded') : null);
  const statusLine = dir === 'outbound'
    ? h('p', { class: `msg-status status-${status}` },
      h('span', { 'aria-hidden': 'true', class: 'status-mark' }, STATUS_MARK[status] || ''),
      ` ${STATUS_LABEL[status] || status}`,
      reason ? h('span', { class: 'msg-reason' }, `: ${reason}`) : null)
    : null;
  return h('li', {
    class: `msg msg-${dir}${status === 'failed' ? ' is-failed' : ''}`,
    'data-message-id': msg.id,
    'data-status': status,
    'data-direction': dir,
    id: `m-${msg.id}`,
  }, meta, body, statusLine);
}

function nearBottom() {
  const m = els.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

/**
 * Redraws the messages. `detail.scroll`: 'bottom' always scrolls down, otherwise it follows
 * only when the agent was already at the bottom.
 */
export function renderMessages(detail = {}) {
  if (!els || !openConversation()) return;
  const stick = detail.scroll === 'bottom' || nearBottom();
  const list = sortedMessages();
  const existing = new Map(Array.from(els.messages.children).map((li) => [li.dataset.messageId, li]));
  const items = list.map((msg) => {
    const fresh = messageView(msg);
    const old = existing.get(msg.id);
    // Keep unchanged nodes (focus, images) and replace changed ones.
    if (old && old.isEqualNode(fresh)) return old;
    return fresh;
  });
  els.messages.replaceChildren(...items);
  els.older.hidden = state.messagesLoaded;
  els.older.textContent = state.messagesLoaded ? '' : 'Loading messages…';
  if (state.messagesLoaded && !list.length) {
    els.older.hidden = false;
    els.older.textContent = 'No messages yet.';
  }
  if (stick) els.messages.scrollTop = els.messages.scrollHeight;
}

/** Shows who else is typing in the open conversation. */
export function renderTyping() {
  if (!els) return;
  const typers = state.typing.get(state.openId);
  const names = typers ? Array.from(typers.values()).map((t) => t.name) : [];
  els.typing.textContent = names.length
    ? `${names.join(' and ')} ${names.length === 1 ? 'is' : 'are'} typing…` : '';
}

export function focusTitle() {
  if (els && !els.section.hidden) els.title.focus();
}
