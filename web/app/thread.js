// The middle pane: the open conversation's header with its actions (assign to me, reassign,
// resolve, priority, labels) and its messages with channel, direction, author, time and
// delivery status. Message items carry `data-message-id`, `data-status` and `data-direction`
// (test hooks). The reply box is composer.js.

import { api, h, can, humanError, ApiError } from '/ui/shared/api.js';
import {
  state, on, emit, openConversation, agentName, sortedMessages, placeInList, mergeConversation,
} from './state.js';
import {
  channelName, contactName, shortTime, fullTime, isoTime, contentText, failureReason, duration,
  windowClosed, WHATSAPP_WINDOW_MS, kids,
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
 * `toast(text, kind)`, `back()`, `showPanel()`.
 */
export function mountThread(root, context) {
  ctx = context;
  const title = h('h1', { id: 'thread-title', class: 'thread-title', tabindex: '-1' });
  const sub = h('p', { class: 'thread-sub', id: 'thread-sub' });
  const windowNote = h('p', { class: 'thread-window', id: 'thread-window' });
  const assignMe = h('button', { id: 'assign-me', type: 'button', 'aria-keyshortcuts': 'a', onclick: () => assignToMe() }, 'Assign to me');
  const resolve = h('button', { id: 'resolve', type: 'button', class: 'primary', 'aria-keyshortcuts': 'e', onclick: () => resolveOpen() }, 'Resolve');
  const reopenNote = h('span', { class: 'muted resolved-note', hidden: true }, 'Resolved. A new message from the customer opens a new conversation.');
  const more = buildMoreActions();
  const back = h('button', { type: 'button', class: 'ghost only-narrow back-btn', onclick: () => ctx.back() }, '← Conversations');
  const details = h('button', { type: 'button', class: 'ghost only-medium details-btn', onclick: () => ctx.showPanel() }, 'Contact & SLA');
  const messages = h('ol', { id: 'messages', class: 'messages', 'aria-label': 'Messages', tabindex: '0' });
  const older = h('p', { class: 'muted messages-state', hidden: true });
  const typing = h('p', { id: 'typing-line', class: 'typing-line', 'aria-live': 'polite' });
  const actionError = h('p', { class: 'field-error', id: 'action-error', role: 'alert', hidden: true });
  const head = h('div', { class: 'thread-head' },
    h('div', { class: 'thread-nav' }, back, details),
    h('div', { class: 'thread-heading' }, title, sub, windowNote),
    h('div', { class: 'thread-actions', role: 'group', 'aria-label': 'Conversation actions' },
      assignMe, resolve, reopenNote, more.root),
    actionError);
  const section = h('section', { id: 'thread', class: 'thread', hidden: true, 'aria-labelledby': 'thread-title' },
    head, older, messages, typing);
  const empty = h('div', { class: 'thread-empty', id: 'thread-empty' },
    h('h1', {}, 'No conversation open'),
    h('p', {}, 'Choose a conversation from the list, or press j to open the first one. Press ? for all keyboard shortcuts.'));
  root.append(empty, section);
  els = { title, sub, windowNote, assignMe, resolve, reopenNote, more, messages, older, typing, actionError, section, empty };
  on('conversation', renderHead);
  on('messages', renderMessages);
  on('typing', renderTyping);
}

/** The section the composer goes into. */
export function threadSection() {
  return els.section;
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

  const snoozeNote = h('p', { class: 'muted small' }, 'Snooze and reopen are not offered by the hub yet.');
  const root = h('details', { class: 'more-actions' },
    h('summary', { class: 'ghost' }, 'More actions'),
    h('div', { class: 'more-panel' }, reassignRow, priorityRow, labelRow, snoozeNote));
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

  const resolved = conv.status === 'resolved';
  const mayReassign = can('reassign_conversations');
  const mayReply = can('reply_to_customer');
  els.assignMe.hidden = !mayReassign || resolved || conv.assignee_id === state.me.id;
  els.resolve.hidden = !mayReply || resolved;
  els.reopenNote.hidden = !resolved;

  const m = els.more;
  m.reassignRow.hidden = !mayReassign || !state.agents || resolved;
  if (!m.reassignRow.hidden) {
    const current = m.reassignSel.value;
    const agents = Array.from(state.agents.entries()).sort((a, b) => a[1].localeCompare(b[1]));
    m.reassignSel.replaceChildren(
      ...agents.map(([id, name]) => h('option', { value: id, disabled: id === conv.assignee_id }, id === state.me.id ? `${name} (you)` : name)),
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
  if (msg.author_name) return msg.author_name;
  if (state.mine.has(msg.id)) return 'You';
  if (msg.author_id) return agentName(msg.author_id);
  return 'Agent';
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
