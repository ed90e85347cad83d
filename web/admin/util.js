// Small DOM and form helpers for the admin console. API data only ever reaches the page
// through textContent / attribute values set here, never through innerHTML.
import { api, humanError } from '/ui/shared/api.js';

const PROPS = new Set(['value', 'checked', 'selected', 'disabled', 'hidden', 'readOnly', 'required',
  'multiple', 'open', 'draggable', 'tabIndex', 'indeterminate']);

/** h('button', {class: 'x', onclick: fn}, 'text', child, [more]) → element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, val] of Object.entries(attrs || {})) {
    if (val === undefined || val === null || val === false && !PROPS.has(key)) continue;
    if (key.startsWith('on') && typeof val === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), val);
    } else if (key === 'class') {
      el.className = Array.isArray(val) ? val.filter(Boolean).join(' ') : val;
    } else if (PROPS.has(key)) {
      el[key] = val;
    } else if (key === 'for') {
      el.htmlFor = val;
    } else {
      el.setAttribute(key, val === true ? '' : String(val));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
/** A unique id for label/control pairs. */
export const nextId = (prefix = 'f') => `${prefix}-${++uid}`;

/**
 * A labelled control with its error slot: returns {wrap, input, error}.
 * `control` is an element (input/select/textarea); `name` is the API field name the error
 * slot answers to (data-error-for).
 */
export function field(label, control, { name, hint, errorName } = {}) {
  const id = control.id || nextId('fld');
  control.id = id;
  const errId = `${id}-err`;
  const hintId = hint ? `${id}-hint` : null;
  control.setAttribute('aria-describedby', [hintId, errId].filter(Boolean).join(' '));
  if (name && !control.name) control.name = name;
  const error = h('div', { class: 'field-error', id: errId, 'data-error-for': errorName || name || id, 'aria-live': 'polite' });
  const wrap = h('div', { class: 'field' },
    h('label', { for: id }, label),
    control,
    hint ? h('div', { class: 'hint', id: hintId }, hint) : null,
    error);
  return { wrap, input: control, error };
}

export function input(attrs = {}) { return h('input', { type: 'text', ...attrs }); }

export function select(options, attrs = {}) {
  const el = h('select', attrs);
  setOptions(el, options, attrs.value);
  return el;
}

/** options: [[value, label], …] or [value, …]. */
export function setOptions(el, options, value) {
  const keep = value !== undefined ? value : el.value;
  clear(el);
  for (const o of options) {
    const [v, l] = Array.isArray(o) ? o : [o, o];
    el.appendChild(h('option', { value: v }, l));
  }
  if (keep !== undefined && options.some((o) => (Array.isArray(o) ? o[0] : o) === keep)) el.value = keep;
}

/** Clears every [data-error-for] in `root` and aria-invalid on its controls. */
export function clearErrors(root) {
  root.querySelectorAll('[data-error-for]').forEach((e) => { e.textContent = ''; });
  root.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
  const general = root.querySelector('.form-error');
  if (general) general.textContent = '';
}

/** Shows `message` next to the field `name` in `root`; false when there is no such slot. */
export function showError(root, name, message) {
  const slot = [...root.querySelectorAll('[data-error-for]')].find((e) => e.dataset.errorFor === name);
  if (!slot) return false;
  slot.textContent = slot.textContent ? `${slot.textContent}\n${message}` : message;
  const ctl = [...root.querySelectorAll('[name]')].find((c) => c.name === name) || document.getElementById(slot.id.replace(/-err$/, ''));
  if (ctl) ctl.setAttribute('aria-invalid', 'true');
  return true;
}

/** Shows an ApiError from a form submission: each detail next to its field, the rest on top. */
export function showApiError(root, err, aliases = {}) {
  const details = (err && err.details) || [];
  let placed = 0;
  for (const d of details) {
    if (!d || !d.field) continue;
    const name = aliases[d.field] || d.field;
    const msg = d.message || '';
    if (showError(root, name, msg) || showError(root, d.field.replace(/\[\d+\]$/, ''), `${d.field}: ${msg}`)) placed++;
  }
  const general = root.querySelector('.form-error');
  if (general && (placed === 0 || placed < details.length)) general.textContent = humanError(err);
  if (!general && placed === 0) toast(humanError(err), 'error');
  const first = root.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

/** A form's top-level error slot. */
export function formError() {
  return h('div', { class: 'form-error', role: 'alert' });
}

// --- toasts -----------------------------------------------------------------------------

export function toast(message, kind = 'info') {
  const host = document.getElementById('toasts');
  if (!host) return;
  const t = h('div', { class: ['toast', `toast-${kind}`], role: kind === 'error' ? 'alert' : 'status' }, message);
  host.appendChild(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 3000);
}

// --- copy / download --------------------------------------------------------------------

export async function copyText(text, label = 'Copied') {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${label} to the clipboard`);
  } catch {
    // Clipboard API refused (insecure origin, permissions): select a temporary field instead.
    const ta = h('textarea', { class: 'offscreen', readOnly: true, 'aria-hidden': 'true' });
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    toast(ok ? `${label} to the clipboard` : 'Copy failed: select the text and copy it by hand', ok ? 'info' : 'error');
  }
}

/** A read-only value with a copy button. */
export function copyable(value, label) {
  const id = nextId('copy');
  return h('div', { class: 'copyable' },
    h('label', { for: id, class: 'visually-hidden' }, label),
    h('input', { id, type: 'text', readOnly: true, value, class: 'mono', onfocus: (e) => e.target.select() }),
    h('button', { type: 'button', class: 'btn-small', 'data-copy': value, onclick: () => copyText(value, label), 'aria-label': `Copy ${label}` }, 'Copy'));
}

export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, class: 'offscreen' });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Rows of objects → CSV text (cells that a spreadsheet would run are neutralised). */
export function toCsv(header, rows) {
  const cell = (v) => {
    let s = v === null || v === undefined ? '' : String(v);
    if (/^[=+\-@]/.test(s)) s = `'${s}`;
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [header, ...rows].map((r) => r.map(cell).join(',')).join('\r\n') + '\r\n';
}

// --- formatting -------------------------------------------------------------------------

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const hrs = Math.floor(m / 60);
  return `${hrs}h ${m % 60}m`;
}

/** A <time> element. */
export function timeEl(ms) {
  if (ms === null || ms === undefined) return '—';
  return h('time', { datetime: new Date(ms).toISOString() }, fmtTime(ms));
}

// --- API helpers ------------------------------------------------------------------------

/** Every page of a cursor-paged list (stops after `max` pages). */
export async function fetchAll(path, query = {}, max = 20) {
  const out = [];
  let cursor;
  for (let i = 0; i < max; i++) {
    const page = await api('GET', path, undefined, { query: { limit: 100, ...query, ...(cursor ? { cursor } : {}) } });
    out.push(...(page.data || []));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

/** A table: columns [{label, cell(row) → node|string, class?}]. */
export function table(columns, rows, { caption, empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.label)))),
      h('tbody', {}, rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : {},
        columns.map((c) => h('td', { class: c.class, 'data-label': c.label }, c.cell(r))))))));
}

/** A section header with an optional action area. */
export function sectionHead(title, ...actions) {
  return h('div', { class: 'section-head' }, h('h1', { tabindex: '-1' }, title), h('div', { class: 'actions' }, actions));
}

/** A card with a heading. */
export function card(title, ...children) {
  return h('section', { class: 'card', 'aria-label': title }, h('h2', {}, title), children);
}

/** Busy state for a submit button during a call. */
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try { return await fn(); } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** A confirm dialog (the native <dialog>), resolving true/false. */
export function confirmDialog(message, { okLabel = 'Confirm', danger = false } = {}) {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'button', class: danger ? 'danger' : 'primary' }, okLabel);
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const dlg = h('dialog', { class: 'confirm', 'aria-label': 'Confirm' },
      h('p', {}, message), h('div', { class: 'actions' }, cancel, ok));
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    ok.addEventListener('click', () => done(true));
    cancel.addEventListener('click', () => done(false));
    dlg.addEventListener('cancel', (e) => { e.preventDefault(); done(false); });
    document.body.appendChild(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

/** Loading / failure wrapper for a section body. */
export async function loadInto(container, fn) {
  clear(container);
  container.appendChild(h('p', { class: 'loading', role: 'status' }, 'Loading…'));
  try {
    const node = await fn();
    clear(container);
    if (node) container.appendChild(node);
  } catch (err) {
    clear(container);
    container.appendChild(h('p', { class: 'form-error', role: 'alert' }, humanError(err)));
  }
}

export function badge(text, kind = '') {
  return h('span', { class: ['badge', kind] }, text);
}

export const CHANNEL_LABEL = { whatsapp: 'WhatsApp', sms: 'SMS', webchat: 'Web chat' };

/** `fetchAll(path)` when the user's grants allow it, else [] (no request, no 403 in the log). */
export async function fetchIf(permission, path, query) {
  const { can } = await import('/ui/shared/api.js');
  return can(permission) ? fetchAll(path, query) : [];
}

/** The account's teams: the admin list (manage_users), else the names queue stats carry. */
export async function teamsList() {
  const { can } = await import('/ui/shared/api.js');
  if (can('manage_users')) return fetchAll('/v1/admin/teams');
  if (can('view_conversations')) {
    const stats = await api('GET', '/v1/queues/stats');
    return (stats.teams || []).map((t) => ({ id: t.id, name: t.name, active: true }));
  }
  return [];
}
