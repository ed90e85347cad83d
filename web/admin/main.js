// The admin console: sign-in, the section nav (hash routes), the live connection and the
// keyboard shortcuts. Each section lives in its own module under sections/.
import { session, onSession, signOut, can } from '/ui/shared/api.js';
import { Live } from '/ui/shared/live.js';
import { mountSignIn } from '/ui/shared/signin.js';
import { h, clear } from './util.js';

const SECTIONS = {
  routing: { title: 'Routing', load: () => import('./sections/routing.js'), perm: 'configure_routing', key: 'r' },
  people: { title: 'People', load: () => import('./sections/people.js'), perm: 'manage_users', key: 'p' },
  inboxes: { title: 'Channels', load: () => import('./sections/inboxes.js'), perm: 'configure_routing', key: 'c' },
  queues: { title: 'Live queues', load: () => import('./sections/queues.js'), perm: 'view_conversations', key: 'q' },
  alerts: { title: 'Alerts', load: () => import('./sections/alerts.js'), perm: 'configure_routing', key: 'a' },
  reports: { title: 'Reports', load: () => import('./sections/reports.js'), perm: 'view_sla_reports', key: 'e' },
  audit: { title: 'Audit log', load: () => import('./sections/audit.js'), perm: 'view_audit_log', key: 'l' },
  'dead-letters': { title: 'Dead letters', load: () => import('./sections/deadletters.js'), perm: 'configure_routing', key: 'd' },
  'api-keys': { title: 'API keys', load: () => import('./sections/apikeys.js'), perm: 'manage_users', key: 'k' },
  webhooks: { title: 'Outbound webhooks', load: () => import('./sections/webhooks.js'), perm: 'configure_routing', key: 'w' },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const navToggle = document.getElementById('nav-toggle');
const connection = document.getElementById('connection');
const whoami = document.getElementById('whoami');
const signOutButton = document.getElementById('sign-out');
const help = document.getElementById('help');

let live = null;
let current = null; // {name, cleanup, onFrame, shortcuts}
let renderSeq = 0;
let signingIn = false;

const STATE_TEXT = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };
function setConnection(state) {
  connection.dataset.state = state;
  connection.querySelector('.conn-text').textContent = STATE_TEXT[state] || state;
  connection.title = `Live updates: ${STATE_TEXT[state] || state}`;
}

function allowed(name) {
  const s = SECTIONS[name];
  return s && can(s.perm);
}

function applyGrants() {
  for (const li of nav.querySelectorAll('li[data-perm]')) li.hidden = !can(li.dataset.perm);
}

function firstAllowed() {
  return Object.keys(SECTIONS).find(allowed);
}

function routeName() {
  const m = location.hash.match(/^#\/([a-z-]+)/);
  return m ? m[1] : null;
}

function markNav(name) {
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function render() {
  if (!session.user) return;
  if (location.hash && !location.hash.startsWith('#/')) return; // #setup=… and plain anchors
  let name = routeName();
  if (!name || !SECTIONS[name]) {
    const first = firstAllowed();
    if (first) { location.replace(`#/${first}`); return; }
  }
  const seq = ++renderSeq;
  if (current && current.cleanup) { try { current.cleanup(); } catch { /* ignore */ } }
  current = null;
  closeNav();
  clear(main);
  if (!name || !allowed(name)) {
    main.appendChild(h('div', { class: 'card' },
      h('h1', {}, 'Nothing to administer here'),
      h('p', {}, name && SECTIONS[name]
        ? `Your role (${session.user.role}) does not grant ${SECTIONS[name].perm}, which ${SECTIONS[name].title} needs.`
        : 'Your role does not grant any administrative permission. Ask an administrator, or use the agent workspace.'),
      h('p', {}, h('a', { href: '/' }, 'Open the agent workspace'))));
    markNav(null);
    return;
  }
  markNav(name);
  document.title = `${SECTIONS[name].title} · Switchboard admin`;
  main.appendChild(h('p', { class: 'loading', role: 'status' }, 'Loading…'));
  let mod;
  try {
    mod = await SECTIONS[name].load();
  } catch (err) {
    if (seq !== renderSeq) return;
    clear(main);
    main.appendChild(h('p', { class: 'form-error', role: 'alert' }, `This section failed to load: ${err.message}`));
    return;
  }
  if (seq !== renderSeq) return;
  clear(main);
  const host = h('div', { class: 'section', 'data-section': name });
  main.appendChild(host);
  // Sections may register shortcuts (ctx.shortcuts) before their data has loaded.
  const ctx = { live, user: session.user, section: name, shortcuts: {} };
  current = { name, shortcuts: ctx.shortcuts };
  try {
    const out = await mod.render(host, ctx) || {};
    if (seq !== renderSeq) { if (out.cleanup) out.cleanup(); return; }
    current = { name, ...out, shortcuts: { ...ctx.shortcuts, ...(out.shortcuts || {}) } };
    // Moving between sections: land on the new section's heading (screen readers announce it).
    if (seq > 1 && host.isConnected && !host.contains(document.activeElement)) {
      const heading = host.querySelector('h1');
      if (heading) heading.focus({ preventScroll: true });
    }
  } catch (err) {
    if (seq !== renderSeq) return;
    host.appendChild(h('p', { class: 'form-error', role: 'alert' }, err.human || err.message));
    current = { name };
  }
}

function onFrame(e) {
  if (current && current.onFrame) {
    try { current.onFrame(e.detail); } catch (err) { console.warn('frame handler', err); }
  }
}

function onResync() {
  if (current && current.onResync) current.onResync();
}

function startLive() {
  if (live) return;
  live = new Live();
  live.addEventListener('state', (e) => setConnection(e.detail));
  live.addEventListener('frame', onFrame);
  live.addEventListener('resync', onResync);
  live.start();
}

function stopLive() {
  if (live) { live.stop(); live = null; }
  setConnection('offline');
}

async function showSignIn() {
  if (signingIn) return;
  signingIn = true;
  stopLive();
  if (current && current.cleanup) { try { current.cleanup(); } catch { /* ignore */ } }
  current = null;
  nav.hidden = true;
  navToggle.hidden = true;
  signOutButton.hidden = true;
  whoami.textContent = '';
  clear(main);
  const mount = h('div', { class: 'signin-host' }, h('p', { class: 'loading', role: 'status' }, 'Loading…'));
  main.appendChild(mount);
  document.title = 'Sign in · Switchboard admin';
  try {
    await mountSignIn(mount);
  } finally {
    signingIn = false;
  }
  enter();
}

function enter() {
  const user = session.user;
  if (!user) { showSignIn(); return; }
  whoami.textContent = `${user.name || user.email} · ${user.role}`;
  signOutButton.hidden = false;
  nav.hidden = false;
  navToggle.hidden = false;
  applyGrants();
  startLive();
  if (location.hash && !location.hash.startsWith('#/')) location.replace('#/');
  render();
}

// --- narrow screens: the nav is a drawer ---------------------------------------------------

function closeNav() {
  document.body.classList.remove('nav-open');
  navToggle.setAttribute('aria-expanded', 'false');
}
navToggle.addEventListener('click', () => {
  const open = !document.body.classList.contains('nav-open');
  document.body.classList.toggle('nav-open', open);
  navToggle.setAttribute('aria-expanded', String(open));
  if (open) { const a = nav.querySelector('li:not([hidden]) a'); if (a) a.focus(); }
});

// --- chrome --------------------------------------------------------------------------------

document.getElementById('skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
signOutButton.addEventListener('click', async () => {
  try { await signOut(); } catch { /* the session is gone either way */ }
  showSignIn();
});
document.getElementById('help-button').addEventListener('click', () => help.showModal());

// --- keyboard shortcuts ----------------------------------------------------------------------

let pendingG = 0;
function typingIn(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}
document.addEventListener('keydown', (e) => {
  if (!session.user) return;
  if (e.key === 'Escape' && document.body.classList.contains('nav-open')) { closeNav(); navToggle.focus(); return; }
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && current && current.shortcuts) {
    const fn = e.shiftKey ? current.shortcuts.ctrlShiftEnter : current.shortcuts.ctrlEnter;
    if (fn) { e.preventDefault(); fn(); }
    return;
  }
  if (e.altKey || e.ctrlKey || e.metaKey || typingIn(e.target) || document.querySelector('dialog[open]')) return;
  if (pendingG && Date.now() - pendingG < 1500) {
    pendingG = 0;
    const name = Object.keys(SECTIONS).find((n) => SECTIONS[n].key === e.key.toLowerCase());
    if (name && allowed(name)) { e.preventDefault(); location.hash = `#/${name}`; }
    return;
  }
  pendingG = 0;
  if (e.key === '?') { e.preventDefault(); help.showModal(); }
  else if (e.key === 'g') { pendingG = Date.now(); }
  else if (e.key === 'n' && current && current.shortcuts && current.shortcuts.n) { e.preventDefault(); current.shortcuts.n(); }
  else if (e.key === '/') {
    const first = main.querySelector('input:not([type=hidden]):not([readonly]), select, textarea');
    if (first) { e.preventDefault(); first.focus(); }
  }
});

window.addEventListener('hashchange', () => render());

onSession((user) => {
  if (!user && !signingIn) showSignIn();
});

// mountSignIn resumes a live session from the refresh cookie first, so a reload goes
// straight back to the console.
setConnection('offline');
showSignIn();
