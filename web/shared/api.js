// The hub's REST API for its own pages: the access token lives in this module's memory only;
// the refresh token is the hub's HttpOnly `sb_refresh` cookie, spent by `POST /v1/auth/refresh`
// (same-origin only). Errors are the API's envelope, turned into `ApiError`s with a sentence
// for people.

let accessToken = null;
let refreshing = null;
const listeners = new Set();

export const session = { user: null };

/** Calls `fn(user)` whenever the session changes: the user, or null when signed out/expired. */
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// Whether this browser may hold a refresh cookie (not a credential: the cookie is HttpOnly).
// Without it a first visit does not ask the hub to refresh and collect a 401.
const HINT = 'switchboard.signed-in';

function setUser(user) {
  session.user = user;
  try {
    if (user) localStorage.setItem(HINT, '1');
    else localStorage.removeItem(HINT);
  } catch (_) { /* storage disabled: every visit asks */ }
  for (const fn of listeners) {
    try { fn(user); } catch (e) { console.error(e); }
  }
}

/** The current access token (for opening sockets); null when signed out. */
export function token() {
  return accessToken;
}

const SENTENCES = {
  invalid_credentials: 'That email and password do not match an active account.',
  mfa_required: 'Enter the 6-digit code from your authenticator app.',
  invalid_mfa_code: 'That code is not right. Codes change every 30 seconds: try the current one.',
  rate_limited: 'Too many attempts. Wait a moment and try again.',
  unauthenticated: 'Your session has ended. Sign in again.',
  token_expired: 'Your session has ended. Sign in again.',
  invalid_refresh_token: 'Your session has ended. Sign in again.',
  refresh_token_reused: 'Your session was ended for safety. Sign in again.',
  missing_refresh_token: 'Sign in to continue.',
  forbidden: 'You do not have permission to do that.',
  not_found: 'That no longer exists. It may have been deleted.',
  conflict: 'That clashes with something that already exists.',
  validation_failed: 'Some fields need attention.',
  whatsapp_window_closed: 'The customer last wrote more than 24 hours ago: WhatsApp only allows an approved template now.',
  unavailable: 'The hub is busy right now. Try again in a moment.',
  internal_error: 'Something went wrong on the hub. Try again; if it keeps happening, quote the reference below.',
  network: 'The hub cannot be reached. Check your connection.',
  invalid_setup_token: 'That setup link is not valid. Use the link the hub printed when it started.',
  payload_too_large: 'That is too large to send.',
};

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = (body && body.error) || {};
    super(e.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || (status === 0 ? 'network' : `http_${status}`);
    this.details = Array.isArray(e.details) ? e.details : [];
    this.correlationId = e.correlation_id || null;
  }

  /** The problem with one field, if the API named it. */
  field(name) {
    const d = this.details.find((x) => x && (x.field === name || (x.field || '').startsWith(`${name}.`) || (x.field || '').startsWith(`${name}[`)));
    return d ? (d.message || this.message) : undefined;
  }

  /** A sentence for people. */
  get human() {
    return humanError(this);
  }
}

/** A sentence for people about any error. */
export function humanError(err) {
  if (!err) return '';
  if (err instanceof ApiError) {
    if (err.status === 422 || err.code === 'invalid_field' || err.code === 'validation_failed') {
      const first = err.details.find((d) => d && d.message);
      return first ? `${first.field ? `${first.field}: ` : ''}${first.message}` : err.message;
    }
    const known = SENTENCES[err.code];
    if (known && err.code === 'internal_error' && err.correlationId) {
      return `${known} (reference ${err.correlationId})`;
    }
    return known || err.message;
  }
  return err.message || String(err);
}

function queryString(query) {
  if (!query) return '';
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) v.forEach((x) => p.append(k, x));
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

async function send(method, path, body, opts) {
  const headers = { Accept: 'application/json', ...(opts.headers || {}) };
  if (accessToken && !opts.anonymous) headers.Authorization = `Bearer ${accessToken}`;
  if (body !== undefined && body !== null) headers['Content-Type'] = 'application/json';
  if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
  try {
    return await fetch(path + queryString(opts.query), {
      method,
      headers,
      body: body !== undefined && body !== null ? JSON.stringify(body) : undefined,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, null, 'The hub cannot be reached.');
  }
}

async function failure(res) {
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  return new ApiError(res.status, body);
}

/**
 * One API call. Resolves the parsed JSON (null for 204), or the Response with `opts.raw`.
 * A 401 refreshes the session once and retries; if that fails the session ends.
 */
export async function api(method, path, body, opts = {}) {
  let res = await send(method, path, body, opts);
  if (res.status === 401 && !opts.anonymous && accessToken) {
    if (await refresh()) res = await send(method, path, body, opts);
  }
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && !opts.anonymous) {
      accessToken = null;
      setUser(null);
    }
    throw err;
  }
  if (opts.raw) return res;
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Trades the refresh cookie for a new access token; one refresh at a time. */
export function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const res = await send('POST', '/v1/auth/refresh', undefined, { anonymous: true }).catch(() => null);
      if (!res || !res.ok) return false;
      const body = await res.json();
      accessToken = body.access_token;
      return true;
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

async function loadUser() {
  const me = await api('GET', '/v1/auth/me');
  setUser(me);
  return me;
}

/** Signs in; throws an ApiError (`mfa_required` asks for a code). */
export async function signIn(email, password, { totpCode, backupCode } = {}) {
  const body = { email, password, refresh_in: 'cookie' };
  if (totpCode) body.totp_code = totpCode;
  if (backupCode) body.backup_code = backupCode;
  const res = await send('POST', '/v1/auth/login', body, { anonymous: true });
  if (!res.ok) throw await failure(res);
  accessToken = (await res.json()).access_token;
  return loadUser();
}

/** Resumes a session from the refresh cookie (after a reload); the user or null. */
export async function restore() {
  let hinted = true;
  try { hinted = localStorage.getItem(HINT) !== null; } catch (_) { /* ask anyway */ }
  if (!hinted) return null;
  if (!(await refresh())) {
    setUser(null);
    return null;
  }
  try {
    return await loadUser();
  } catch (_) {
    return null;
  }
}

/** Ends the session here; the cookie is cleared by the hub. */
export async function signOut() {
  try { await api('POST', '/v1/auth/logout'); } catch (_) { /* gone already */ }
  accessToken = null;
  setUser(null);
}

/** Whether the signed-in user's grants include `permission` (any scope). */
export function can(permission) {
  const g = session.user && session.user.grants;
  if (!g) return false;
  if (Array.isArray(g)) return g.some((x) => x === permission || (x && x.permission === permission));
  return Object.prototype.hasOwnProperty.call(g, permission);
}

/** The scope a grant reaches (`all`, `branch`, `team`, `assigned`), or null. */
export function scopeOf(permission) {
  const g = session.user && session.user.grants;
  if (!g) return null;
  if (Array.isArray(g)) {
    const x = g.find((y) => y && y.permission === permission);
    return x ? x.scope : null;
  }
  return g[permission] || null;
}

/**
 * Builds DOM without innerHTML: `h('button', {class: 'x', onclick: fn, 'aria-label': 'Go'}, 'Go')`.
 * Children may be nodes, strings, numbers, arrays, null or false.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'hidden' || k === 'disabled' || k === 'checked' || k === 'selected' || k === 'required' || k === 'multiple' || k === 'readOnly') el[k] = Boolean(v);
    else if (k === 'value') el.value = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  const add = (c) => {
    if (c === undefined || c === null || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  };
  children.forEach(add);
  return el;
}

/** A random id, for Idempotency-Key and client message ids. */
export function randomId() {
  return crypto.randomUUID();
}
