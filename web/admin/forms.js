// A small form builder shared by the sections: labelled fields, client-side checks before
// sending, the API's errors shown next to their fields.
import { humanError } from '/ui/shared/api.js';
import { h, clear, field, input, select, formError, clearErrors, showApiError, showError, busy, nextId } from './util.js';

/**
 * form({title, fields, submitLabel, onSubmit, onCancel, id}) → {el, values(), controls}
 * fields: [{name, label, type: text|email|password|number|select|checkbox|checkboxes|textarea,
 *           options, value, hint, required, check(value, values) → message|undefined, attrs}]
 * onSubmit(values) may throw an ApiError: its details are shown next to their fields.
 */
export function form({ title, fields, submitLabel = 'Save', onSubmit, onCancel, id, cancelLabel = 'Cancel', intro }) {
  const el = h('form', { class: 'card form', novalidate: true, id });
  const controls = {};
  const general = formError();
  if (title) el.appendChild(h('h2', {}, title));
  if (intro) el.appendChild(intro);
  el.appendChild(general);
  const grid = h('div', { class: 'form-grid' });
  for (const f of fields) {
    if (f.type === 'node') { grid.appendChild(f.node); continue; }
    const c = control(f);
    controls[f.name] = c;
    grid.appendChild(c.wrap);
  }
  el.appendChild(grid);
  const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
  el.appendChild(h('div', { class: 'actions form-actions' }, submit,
    onCancel ? h('button', { type: 'button', onclick: onCancel }, cancelLabel) : null));

  function values() {
    const out = {};
    for (const [name, c] of Object.entries(controls)) out[name] = c.get();
    return out;
  }

  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(el);
    const v = values();
    let bad = null;
    for (const f of fields) {
      if (!f.name || !controls[f.name] || controls[f.name].wrap.hidden) continue;
      const val = v[f.name];
      let msg;
      if (f.required && (val === '' || val === null || val === undefined || (Array.isArray(val) && !val.length))) msg = f.requiredMessage || 'This is required.';
      else if (f.check) msg = f.check(val, v);
      if (msg) {
        showError(el, f.name, msg);
        if (!bad) bad = controls[f.name].focusable;
      }
    }
    if (bad) { bad.focus(); return; }
    await busy(submit, async () => {
      try {
        await onSubmit(v);
      } catch (err) {
        if (err && err.status) showApiError(el, err, fields.reduce((m, f) => { if (f.apiField) m[f.apiField] = f.name; return m; }, {}));
        else general.textContent = humanError(err);
      }
    });
  });

  return { el, values, controls, general, focus: () => { const c = Object.values(controls)[0]; if (c) c.focusable.focus(); } };
}

function control(f) {
  const attrs = { ...(f.attrs || {}) };
  if (f.type === 'checkbox') {
    const id = nextId('cb');
    const box = h('input', { type: 'checkbox', id, name: f.name, checked: !!f.value, ...attrs });
    const error = h('div', { class: 'field-error', 'data-error-for': f.name, id: `${id}-err`, 'aria-live': 'polite' });
    box.setAttribute('aria-describedby', `${id}-err`);
    const wrap = h('div', { class: 'field field-check' }, box, h('label', { for: id }, f.label), f.hint ? h('div', { class: 'hint' }, f.hint) : null, error);
    return { wrap, focusable: box, get: () => box.checked, set: (v) => { box.checked = !!v; } };
  }
  if (f.type === 'checkboxes') {
    const id = nextId('cbs');
    const list = h('div', { class: 'checklist' });
    const error = h('div', { class: 'field-error', 'data-error-for': f.name, id: `${id}-err`, 'aria-live': 'polite' });
    const wrap = h('fieldset', { class: 'field', 'aria-describedby': `${id}-err` }, h('legend', {}, f.label), list, error);
    const selected = new Set(f.value || []);
    const boxes = [];
    for (const o of f.options || []) {
      const [v, l] = Array.isArray(o) ? o : [o, o];
      const bid = nextId('cb');
      const b = h('input', { type: 'checkbox', id: bid, value: v, checked: selected.has(v) });
      boxes.push(b);
      list.appendChild(h('div', { class: 'check' }, b, h('label', { for: bid }, l)));
    }
    if (!boxes.length) list.appendChild(h('p', { class: 'muted' }, f.emptyText || 'None to choose from.'));
    // An invisible named anchor so showError can find and mark the group.
    const anchor = h('input', { type: 'hidden', name: f.name });
    wrap.appendChild(anchor);
    return { wrap, focusable: boxes[0] || anchor, get: () => boxes.filter((b) => b.checked).map((b) => b.value) };
  }
  let el;
  if (f.type === 'select') el = select(f.options || [], { value: f.value, ...attrs });
  else if (f.type === 'textarea') { el = h('textarea', { rows: f.rows || 3, ...attrs }); el.value = f.value ?? ''; }
  else el = input({ type: f.type || 'text', value: f.value ?? '', ...attrs });
  if (f.required) el.setAttribute('aria-required', 'true');
  const fl = field(f.label, el, { name: f.name, hint: f.hint });
  return {
    wrap: fl.wrap,
    focusable: el,
    get: () => (f.type === 'number' ? (el.value.trim() === '' ? null : Number(el.value)) : el.value),
    set: (v) => { el.value = v; },
  };
}

/** Shows a form in `host` (replacing what was there), focused. */
export function showForm(host, f) {
  clear(host);
  host.appendChild(f.el);
  f.focus();
  return f;
}

export const isEmail = (v) => /^[^\s@]+@[^\s@]+\.[^\s@.]+[^\s@]*$/.test(v.trim());
export const isSlug = (v) => /^[a-z0-9_-]{1,64}$/.test(v);
export const isE164 = (v) => /^\+[1-9]\d{6,14}$/.test(v);

/** A password policy check mirroring the hub's (length, three classes, not the email). */
export function passwordProblem(pw, email) {
  if (!pw || [...pw].length < 12) return 'At least 12 characters.';
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((r) => r.test(pw)).length;
  if (classes < 3) return 'Use three of: lowercase, uppercase, digits, symbols.';
  const local = (email || '').trim().toLowerCase().split('@')[0];
  if (local.length >= 3 && pw.toLowerCase().includes(local)) return 'Must not contain the email address.';
  return undefined;
}

export { showError, clearErrors };
