// Sign-in for the hub's own pages: email and password, then a TOTP or backup code when the
// account has a second factor, and on a first run (`#setup=<token>` in the address the hub
// printed) the form that creates the first administrator.

import { api, h, humanError, restore, signIn } from './api.js';

function field(id, label, attrs = {}) {
  const error = h('p', { class: 'field-error', id: `${id}-error`, 'aria-live': 'polite' });
  const input = h('input', { id, name: id, 'aria-describedby': `${id}-error`, ...attrs });
  return { input, error, row: h('div', { class: 'field' }, h('label', { for: id }, label), input, error) };
}

/** Checks the fields before sending: each problem next to its field, focus on the first. */
function valid(fields) {
  let first = null;
  for (const f of fields) {
    const ok = f.input.checkValidity();
    f.error.textContent = ok ? '' : f.input.validationMessage;
    f.input.setAttribute('aria-invalid', ok ? 'false' : 'true');
    if (!ok && !first) first = f.input;
  }
  if (first) first.focus();
  return !first;
}

function setupToken() {
  const m = /[#&]setup=([A-Za-z0-9_-]+)/.exec(window.location.hash);
  return m ? m[1] : null;
}

function showErrors(err, fields, general) {
  let placed = false;
  for (const [name, f] of Object.entries(fields)) {
    const msg = err.field ? err.field(name) : undefined;
    f.error.textContent = msg || '';
    f.input.setAttribute('aria-invalid', msg ? 'true' : 'false');
    if (msg) placed = true;
  }
  general.textContent = placed ? '' : humanError(err);
}

function setupForm(container, token) {
  return new Promise((resolve) => {
    const name = field('setup-name', 'Your name', { autocomplete: 'name', required: true, maxlength: 200 });
    const email = field('email', 'Email', { type: 'email', autocomplete: 'username', required: true });
    const password = field('password', 'Password', { type: 'password', autocomplete: 'new-password', required: true, minlength: 12 });
    const general = h('p', { class: 'form-error', role: 'alert' });
    const submit = h('button', { type: 'submit', id: 'sign-in', class: 'primary' }, 'Create administrator');
    const form = h('form', { class: 'signin-card', novalidate: true, 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title' }, 'Welcome to Switchboard'),
      h('p', {}, 'Create the first administrator. You will sign in with this email and password.'),
      name.row, email.row, password.row, general, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      general.textContent = '';
      if (!valid([name, email, password])) return;
      submit.disabled = true;
      try {
        await api('POST', '/v1/setup', {
          token, name: name.input.value, email: email.input.value, password: password.input.value,
        }, { anonymous: true });
        const user = await signIn(email.input.value, password.input.value);
        window.history.replaceState(null, '', window.location.pathname);
        resolve(user);
      } catch (err) {
        if (err.status === 409) { // already set up: sign in instead
          window.history.replaceState(null, '', window.location.pathname);
          container.replaceChildren();
          passwordForm(container).then(resolve);
          return;
        }
        showErrors(err, { name: name, email, password }, general);
      } finally {
        submit.disabled = false;
      }
    });
    container.replaceChildren(form);
    name.input.focus();
  });
}

function passwordForm(container) {
  return new Promise((resolve) => {
    const email = field('email', 'Email', { type: 'email', autocomplete: 'username', required: true });
    const password = field('password', 'Password', { type: 'password', autocomplete: 'current-password', required: true });
    const totp = field('totp', 'Authentication code', {
      inputmode: 'numeric', autocomplete: 'one-time-code', pattern: '[0-9]{6}|[A-Za-z0-9]{5}-?[A-Za-z0-9]{5}', maxlength: 11,
    });
    totp.row.hidden = true;
    const hint = h('p', { class: 'hint', hidden: true }, 'Enter the 6-digit code from your authenticator app, or one of your backup codes.');
    const general = h('p', { class: 'form-error', role: 'alert' });
    const submit = h('button', { type: 'submit', id: 'sign-in', class: 'primary' }, 'Sign in');
    const form = h('form', { class: 'signin-card', novalidate: true, 'aria-labelledby': 'signin-title' },
      h('h1', { id: 'signin-title' }, 'Sign in to Switchboard'),
      email.row, password.row, hint, totp.row, general, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      general.textContent = '';
      if (!valid(totp.row.hidden ? [email, password] : [email, password, totp])) return;
      submit.disabled = true;
      const code = totp.input.value.trim();
      const second = totp.row.hidden || !code ? {} : (/^[0-9]{6}$/.test(code) ? { totpCode: code } : { backupCode: code });
      try {
        resolve(await signIn(email.input.value.trim(), password.input.value, second));
      } catch (err) {
        if (err.code === 'mfa_required') {
          totp.row.hidden = false;
          hint.hidden = false;
          totp.input.required = true;
          totp.input.focus();
          general.textContent = '';
        } else {
          showErrors(err, { email, password, totp_code: totp }, general);
          if (err.code === 'invalid_mfa_code') totp.error.textContent = humanError(err);
        }
      } finally {
        submit.disabled = false;
      }
    });
    container.replaceChildren(form);
    email.input.focus();
  });
}

/**
 * Resolves the signed-in user: from the refresh cookie when the session is still alive,
 * otherwise after the person signs in (or creates the first administrator) in `container`.
 */
export async function mountSignIn(container) {
  const token = setupToken();
  if (!token) {
    const user = await restore();
    if (user) return user;
  }
  if (token) {
    const { needed } = await api('GET', '/v1/setup', undefined, { anonymous: true }).catch(() => ({ needed: false }));
    if (needed) return setupForm(container, token);
    window.history.replaceState(null, '', window.location.pathname);
  }
  return passwordForm(container);
}
