// The reply box: Enter sends, Shift+Enter is a new line; a "private note" toggle; canned
// responses with `/` (or the button); approved templates when the WhatsApp 24-hour window is
// closed; `typing` commands while typing. Every reply carries an Idempotency-Key that is kept
// for retries of the same body, so a retry never sends twice. Drafts live in memory per
// conversation and survive an expired session (the DOM and the map are kept while signing in).

import { api, h, humanError, ApiError } from '/ui/shared/api.js';
import {
  state, on, emit, openConversation, loadCanned, loadTemplates, placeInList, mergeConversation,
} from './state.js';
import {
  contactName, newKey, placeholders, throttle, windowClosed,
} from './util.js';

let els = null;
let ctx = null;
/** conversation id → {body: JSON text, key}: the key of the last unconfirmed send. */
const attempts = new Map();
/** conversations where the hub answered `whatsapp_window_closed` (clock skew, late data). */
const forcedClosed = new Set();
let sending = false;
let typingOn = null; // conversation id we told "typing: true"
let typingTimer = 0;
let picker = { open: false, items: [], index: 0, start: 0 };

/** `context`: `live()` → the Live instance or null, `announce(text)`. */
export function mountComposer(parent, context) {
  ctx = context;
  const reply = h('textarea', {
    id: 'reply', rows: '3', class: 'reply-input', autocomplete: 'off',
    placeholder: 'Write a reply. Enter sends, Shift+Enter adds a line, / inserts a canned response.',
    'aria-describedby': 'reply-help reply-error',
    'aria-autocomplete': 'list', 'aria-controls': 'canned-list', 'aria-expanded': 'false',
    'aria-keyshortcuts': 'r',
    oninput: onInput, onkeydown: onKeyDown, onblur: () => setTimeout(closePickerIfBlurred, 150),
  });
  const note = h('input', { type: 'checkbox', id: 'note-toggle', onchange: onNoteToggle });
  const cannedBtn = h('button', { type: 'button', class: 'ghost', id: 'canned-btn', onclick: openCannedFromButton }, 'Canned responses');
  const templateBtn = h('button', { type: 'button', class: 'ghost', id: 'template-btn', onclick: () => showTemplates(!els.templates.hidden ? false : true) }, 'Templates');
  const send = h('button', { id: 'send', type: 'submit', class: 'primary' }, 'Send');
  const error = h('p', { id: 'reply-error', class: 'field-error', role: 'alert', hidden: true });
  const help = h('p', { id: 'reply-help', class: 'visually-hidden' }, 'Enter sends. Shift+Enter adds a new line. Type / at the start of a line for canned responses.');
  const closed = h('p', { id: 'window-closed', class: 'window-closed', hidden: true },
    'The customer last wrote more than 24 hours ago: WhatsApp only accepts an approved template. You can still write a private note.');
  const list = h('ul', { id: 'canned-list', class: 'canned-list', role: 'listbox', 'aria-label': 'Canned responses', hidden: true });

  const tplSelect = h('select', { id: 'template-select', onchange: renderTemplateParams });
  const tplPreview = h('p', { class: 'template-preview', id: 'template-preview' });
  const tplParams = h('div', { class: 'template-params' });
  const tplError = h('p', { class: 'field-error', role: 'alert', hidden: true, id: 'template-error' });
  const tplSend = h('button', { type: 'button', class: 'primary', id: 'send-template', onclick: sendTemplate }, 'Send template');
  const templates = h('fieldset', { class: 'templates', id: 'templates', hidden: true },
    h('legend', {}, 'Approved template'),
    h('label', { for: 'template-select' }, 'Template'), tplSelect, tplPreview, tplParams, tplError,
    h('div', { class: 'composer-row' }, tplSend,
      h('button', { type: 'button', class: 'ghost', onclick: () => showTemplates(false) }, 'Close')));

  const form = h('form', {
    id: 'composer', class: 'composer', novalidate: true, 'aria-label': 'Reply',
    onsubmit: (e) => { e.preventDefault(); sendReply(); },
  },
  closed,
  h('div', { class: 'composer-tools' },
    h('label', { class: 'note-toggle', for: 'note-toggle' }, note, ' Private note'),
    cannedBtn, templateBtn),
  templates,
  h('label', { for: 'reply', class: 'visually-hidden' }, 'Reply'),
  h('div', { class: 'reply-wrap' }, list, reply),
  error, help,
  h('div', { class: 'composer-row send-row' }, send));
  parent.append(form);
  els = { form, reply, note, cannedBtn, templateBtn, send, error, closed, list, templates, tplSelect, tplPreview, tplParams, tplError, tplSend };
  on('conversation', refreshMode);
}

/** Called when another conversation opens (or the same one is shown again). */
export function showConversation(prevId) {
  if (prevId && prevId !== state.openId) stopTyping(prevId);
  const draft = state.drafts.get(state.openId) || { text: '', note: false };
  if (els.reply.value !== draft.text) els.reply.value = draft.text;
  els.note.checked = !!draft.note;
  clearError();
  closePicker();
  els.tplError.hidden = true;
  els.templates.hidden = true;
  refreshMode();
}

function saveDraft() {
  if (!state.openId) return;
  const text = els.reply.value;
  if (!text && !els.note.checked) state.drafts.delete(state.openId);
  else state.drafts.set(state.openId, { text, note: els.note.checked });
}

function isClosed() {
  const conv = openConversation();
  return !!conv && (windowClosed(conv) || forcedClosed.has(conv.id));
}

/** Free text or templates, note styling, and what the conversation allows. */
export function refreshMode() {
  if (!els) return;
  const conv = openConversation();
  if (!conv) return;
  const note = els.note.checked;
  const closed = isClosed() && !note;
  const resolved = conv.status === 'resolved';
  els.form.classList.toggle('is-note', note);
  els.closed.hidden = !closed;
  els.reply.disabled = closed;
  // Free text cannot go out: the templates take the reply box's place.
  els.form.classList.toggle('is-closed', closed);
  els.send.textContent = note ? 'Add note' : 'Send';
  els.templateBtn.hidden = !(conv.channel === 'whatsapp' || conv.channel === 'sms') || note;
  els.cannedBtn.hidden = state.canned === null;
  els.reply.placeholder = note
    ? 'Write a private note for your team (never sent to the customer).'
    : closed ? 'The 24-hour window is closed: choose a template below, or tick “Private note”.'
      : resolved ? 'This conversation is resolved; a reply here is still sent to the customer.'
        : 'Write a reply. Enter sends, Shift+Enter adds a line, / inserts a canned response.';
  if (closed && els.templates.hidden) showTemplates(true, { focus: false });
}

function onNoteToggle() {
  saveDraft();
  refreshMode();
  if (!els.reply.disabled) els.reply.focus();
}

export function focusReply() {
  if (!els || !openConversation()) return;
  if (els.reply.disabled) (els.tplSelect.hidden ? els.note : els.tplSelect).focus();
  else els.reply.focus();
}

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
  if (text) els.reply.setAttribute('aria-invalid', 'true');
  else els.reply.removeAttribute('aria-invalid');
}

function clearError() { showError(''); }

// ---------------------------------------------------------------------------------------------
// Typing

const sendTyping = throttle((id) => {
  const live = ctx.live();
  if (!live) return;
  typingOn = id;
  live.command({ type: 'typing', conversation_id: id, typing: true }).catch(() => {});
}, 3000);

function stopTyping(id = typingOn) {
  clearTimeout(typingTimer);
  if (!id || typingOn !== id) return;
  typingOn = null;
  const live = ctx.live();
  if (live) live.command({ type: 'typing', conversation_id: id, typing: false }).catch(() => {});
}

function onInput() {
  saveDraft();
  if (!els.error.hidden) clearError();
  updatePicker();
  const id = state.openId;
  if (!id) return;
  if (els.reply.value.trim() && !els.note.checked) {
    sendTyping(id);
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => stopTyping(id), 5000);
  } else {
    stopTyping(id);
  }
}

// ---------------------------------------------------------------------------------------------
// Sending

/** The Idempotency-Key for this body: the same as the last failed try of the same body. */
function keyFor(convId, body) {
  const text = JSON.stringify(body);
  const last = attempts.get(convId);
  if (last && last.body === text) return last.key;
  const key = newKey('reply');
  attempts.set(convId, { body: text, key });
  return key;
}

function maxLength(conv) {
  return conv.channel === 'sms' ? 1600 : 4096;
}

/** Client-side checks before anything is sent; the message, or '' when fine. */
function check(conv, text, note) {
  const trimmed = text.trim();
  if (!trimmed) return note ? 'Write the note first.' : 'Write a reply first.';
  if (trimmed.length > maxLength(conv)) {
    return `That is ${trimmed.length} characters; ${conv.channel === 'sms' ? 'an SMS reply' : 'a reply'} can have at most ${maxLength(conv)}.`;
  }
  const left = placeholders(trimmed);
  if (left.length) return `Fill in ${left.map((p) => `{{${p}}}`).join(', ')} before sending.`;
  if (!note && isClosed()) return 'The WhatsApp 24-hour window is closed: send an approved template, or tick “Private note”.';
  return '';
}

export async function sendReply() {
  const conv = openConversation();
  if (!conv || sending) return;
  closePicker();
  const note = els.note.checked;
  const text = els.reply.value;
  const problem = check(conv, text, note);
  if (problem) {
    showError(problem);
    if (!note && isClosed()) showTemplates(true);
    else els.reply.focus();
    return;
  }
  clearError();
  const body = note ? { text: text.trim(), private: true } : { text: text.trim() };
  await post(conv, body, {
    onDone: () => {
      if (state.openId === conv.id) {
        els.reply.value = '';
        els.reply.focus();
      }
      state.drafts.delete(conv.id);
      stopTyping(conv.id);
    },
    onError: (err) => {
      if (err.code === 'whatsapp_window_closed') {
        forcedClosed.add(conv.id);
        refreshMode();
        showTemplates(true);
      }
      if (state.openId !== conv.id) return;
      if (err.code === 'whatsapp_window_closed') {
        showError('The customer last wrote more than 24 hours ago: WhatsApp only accepts an approved template now. Your text is kept.');
      } else {
        showError(err instanceof ApiError ? (err.field('text') || humanError(err)) : humanError(err));
      }
    },
  });
}

async function post(conv, body, { onDone, onError }) {
  sending = true;
  els.send.disabled = true;
  els.tplSend.disabled = true;
  els.form.setAttribute('aria-busy', 'true');
  const key = keyFor(conv.id, body);
  try {
    const msg = await api('POST', `/v1/conversations/${encodeURIComponent(conv.id)}/messages`, body, { idempotencyKey: key });
    attempts.delete(conv.id);
    if (msg && msg.id && state.openId === conv.id) {
      // A status frame may have come first: never move a message back to "pending".
      const seen = state.messages.get(msg.id);
      const keep = seen && seen.status && seen.status !== 'pending' ? { status: seen.status, error: seen.error } : {};
      state.messages.set(msg.id, { ...(seen || {}), ...msg, ...keep });
      emit('messages', { scroll: 'bottom' });
    }
    if (msg && msg.sent_at_ms && conv.last_message_at_ms < msg.sent_at_ms && msg.direction !== 'note') {
      const merged = mergeConversation({ ...conv, last_message_at_ms: msg.sent_at_ms });
      placeInList(merged);
      emit('list');
    }
    onDone(msg);
    ctx.announce(body.private ? 'Note added.' : 'Reply sent.');
  } catch (err) {
    // A 422 means this body will never go through: a corrected body gets a fresh key anyway,
    // and the same body must not be replayed. Network errors and 5xx keep the key for a retry.
    if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 429) {
      attempts.delete(conv.id);
    }
    onError(err);
  } finally {
    sending = false;
    els.send.disabled = false;
    els.tplSend.disabled = false;
    els.form.removeAttribute('aria-busy');
  }
}

// ---------------------------------------------------------------------------------------------
// Keys

function onKeyDown(e) {
  if (picker.open) {
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const n = picker.items.length;
      if (n) picker.index = (picker.index + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
      renderPicker();
      return;
    }
    if ((e.key === 'Enter' || e.key === 'Tab') && !e.shiftKey && picker.items.length) {
      e.preventDefault();
      choose(picker.items[picker.index]);
      return;
    }
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      closePicker();
      return;
    }
  }
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    sendReply();
  }
  if (e.key === 'Escape') {
    e.preventDefault();
    els.reply.blur();
  }
}

// ---------------------------------------------------------------------------------------------
// Canned responses

/** The `/code` being typed at the start of the caret's line, or null. */
function slashQuery() {
  const t = els.reply;
  const before = t.value.slice(0, t.selectionStart);
  const m = /(^|\n)\/([\w.-]*)$/.exec(before);
  if (!m) return null;
  return { prefix: m[2].toLowerCase(), start: before.length - m[2].length - 1 };
}

async function updatePicker() {
  const q = slashQuery();
  if (!q) { closePicker(); return; }
  const canned = await loadCanned();
  if (!canned) { closePicker(); return; }
  const again = slashQuery();
  if (!again) { closePicker(); return; }
  picker.items = canned.filter((c) => c.short_code.toLowerCase().startsWith(again.prefix)
    || (again.prefix.length > 1 && c.short_code.toLowerCase().includes(again.prefix))).slice(0, 8);
  picker.start = again.start;
  picker.index = Math.min(picker.index, Math.max(0, picker.items.length - 1));
  picker.open = true;
  renderPicker();
}

function renderPicker() {
  const list = els.list;
  list.hidden = !picker.open;
  els.reply.setAttribute('aria-expanded', String(picker.open));
  if (!picker.open) { els.reply.removeAttribute('aria-activedescendant'); return; }
  if (!picker.items.length) {
    list.replaceChildren(h('li', { class: 'canned-empty', role: 'option', 'aria-disabled': 'true', id: 'canned-none' },
      state.canned && state.canned.length ? 'No canned response starts with that.' : 'No canned responses yet (an admin adds them).'));
    els.reply.removeAttribute('aria-activedescendant');
    return;
  }
  list.replaceChildren(...picker.items.map((c, i) => h('li', {
    role: 'option', id: `canned-${i}`, class: 'canned-item',
    'aria-selected': String(i === picker.index),
    onmousedown: (e) => { e.preventDefault(); choose(c); },
  }, h('span', { class: 'canned-code' }, `/${c.short_code}`), h('span', { class: 'canned-body' }, c.body))));
  els.reply.setAttribute('aria-activedescendant', `canned-${picker.index}`);
}

function closePicker() {
  if (!picker.open) return;
  picker = { open: false, items: [], index: 0, start: 0 };
  renderPicker();
}

function closePickerIfBlurred() {
  if (document.activeElement !== els.reply) closePicker();
}

/** The canned response's text with what the page knows filled in. */
function fill(body) {
  const conv = openConversation();
  const contact = conv ? state.contacts.get(conv.contact_id) : null;
  const known = {
    'contact.name': contact && contact.name ? contact.name : (contact ? contactName(contact) : ''),
    'contact.phone': contact && contact.phone ? contact.phone : '',
    'agent.name': state.me ? state.me.name : '',
  };
  return body.replace(/\{\{\s*([^{}]+?)\s*\}\}/g, (all, name) => (known[name] ? known[name] : all));
}

function choose(canned) {
  const t = els.reply;
  const end = t.selectionStart;
  const text = fill(canned.body);
  t.value = t.value.slice(0, picker.start) + text + t.value.slice(end);
  closePicker();
  const left = /\{\{[^{}]+\}\}/.exec(text);
  if (left) {
    // Select the first placeholder still to fill, so typing replaces it.
    const at = picker.start + left.index;
    t.setSelectionRange(at, at + left[0].length);
    showError(`Fill in ${placeholders(text).map((p) => `{{${p}}}`).join(', ')}.`);
  } else {
    const caret = picker.start + text.length;
    t.setSelectionRange(caret, caret);
  }
  t.focus();
  saveDraft();
}

async function openCannedFromButton() {
  const t = els.reply;
  if (t.disabled) return;
  const v = t.value;
  const caret = t.selectionStart ?? v.length;
  const atLineStart = caret === 0 || v[caret - 1] === '\n';
  const insert = atLineStart ? '/' : '\n/';
  t.value = v.slice(0, caret) + insert + v.slice(caret);
  t.setSelectionRange(caret + insert.length, caret + insert.length);
  t.focus();
  await updatePicker();
}

// ---------------------------------------------------------------------------------------------
// Templates

async function showTemplates(show, { focus = true } = {}) {
  const conv = openConversation();
  if (!show || !conv) { els.templates.hidden = true; return; }
  els.templates.hidden = false;
  els.tplError.hidden = true;
  els.tplSelect.replaceChildren(h('option', { value: '' }, 'Loading templates…'));
  let list = [];
  try {
    list = await loadTemplates(conv.inbox_id);
  } catch (err) {
    els.tplError.textContent = humanError(err);
    els.tplError.hidden = false;
  }
  if (state.openId !== conv.id) return;
  els.tplSelect.replaceChildren(
    h('option', { value: '' }, list.length ? 'Choose a template' : 'No approved templates for this inbox'),
    ...list.map((t) => h('option', { value: t.id }, `${t.name} (${t.language})`)));
  renderTemplateParams();
  if (focus) els.tplSelect.focus();
}

function chosenTemplate() {
  const conv = openConversation();
  const list = (conv && state.templates.get(conv.inbox_id)) || [];
  return list.find((t) => t.id === els.tplSelect.value) || null;
}

function renderTemplateParams() {
  const tpl = chosenTemplate();
  els.tplPreview.textContent = tpl ? (tpl.body || 'No text on record for this template.') : '';
  els.tplParams.replaceChildren(...(tpl ? Array.from({ length: tpl.parameters }, (_, i) => h('div', { class: 'field' },
    h('label', { for: `tpl-param-${i}` }, `Parameter {{${i + 1}}}`),
    h('input', { id: `tpl-param-${i}`, type: 'text', class: 'tpl-param', autocomplete: 'off' }),
    h('p', { class: 'field-error', id: `tpl-param-${i}-error`, hidden: true }))) : []));
  els.tplError.hidden = true;
}

function paramError(i, text) {
  const input = document.getElementById(`tpl-param-${i}`);
  const err = document.getElementById(`tpl-param-${i}-error`);
  if (!input || !err) return false;
  err.textContent = text || '';
  err.hidden = !text;
  if (text) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
  return true;
}

async function sendTemplate() {
  const conv = openConversation();
  const tpl = chosenTemplate();
  els.tplError.hidden = true;
  if (!conv) return;
  if (!tpl) {
    els.tplError.textContent = 'Choose a template first.';
    els.tplError.hidden = false;
    els.tplSelect.focus();
    return;
  }
  const params = Array.from(els.tplParams.querySelectorAll('input.tpl-param'), (i) => i.value.trim());
  let firstBad = -1;
  params.forEach((p, i) => {
    let problem = '';
    if (!p) problem = 'Fill in this parameter.';
    else if (conv.channel === 'whatsapp' && (/[\n\t]/.test(p) || / {5,}/.test(p))) problem = 'No new lines, tabs or more than four spaces in a row.';
    paramError(i, problem);
    if (problem && firstBad < 0) firstBad = i;
  });
  if (firstBad >= 0) {
    document.getElementById(`tpl-param-${firstBad}`).focus();
    return;
  }
  const body = { template: { name: tpl.name, language: tpl.language, parameters: params } };
  await post(conv, body, {
    onDone: () => {
      els.tplParams.querySelectorAll('input').forEach((i) => { i.value = ''; });
      els.templates.hidden = isClosed() ? els.templates.hidden : true;
    },
    onError: (err) => {
      let placed = false;
      if (err instanceof ApiError) {
        params.forEach((_, i) => {
          const m = err.field(`template.parameters[${i}]`);
          if (m) placed = paramError(i, m) || placed;
        });
      }
      if (!placed) {
        els.tplError.textContent = err instanceof ApiError ? (err.field('template') || humanError(err)) : humanError(err);
        els.tplError.hidden = false;
      }
    },
  });
}

/** Stops typing when the page signs out. */
export function composerSignedOut() {
  stopTyping();
}
