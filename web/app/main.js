// The agent workspace (served at `/`): sign-in, then the live console. This module wires the
// pieces together: the session, the WebSocket (`Live`), hash routing (`#/conversations/<id>`),
// the header (presence, connection state, user menu), keyboard shortcuts and announcements.

import {
  api, h, session, onSession, signOut, humanError,
} from '/ui/shared/api.js';
import { Live } from '/ui/shared/live.js';
import { mountSignIn } from '/ui/shared/signin.js';
import {
  state, emit, resetState, loadList, mergeConversation, placeInList, fetchConversation,
  fetchMessages, loadAgents, loadCanned, inView, bumpUnread, defaultView,
  availableViews,
} from './state.js';
import {
  mountList, renderViews, focusSearch, neighbour, render as renderList,
} from './list.js';
import {
  mountThread, threadSection, assignToMe, resolveOpen, reopenOpen, openSnooze, renderWindow,
  focusTitle,
} from './thread.js';
import {
  mountComposer, showConversation, focusReply, refreshMode, composerSignedOut,
} from './composer.js';
import { mountPanel, loadPanel, loadSla, tickPanel, noteConversation } from './panel.js';
import {
  mountOffers, loadOffers, offerFrame, dropOffersFor, tickOffers,
} from './offers.js';
import { contactName, contentText, isTyping, kids } from './util.js';

const $ = (id) => document.getElementById(id);

let live = null;
let signingOut = false;
let signInShowing = false;
/** Set while this page stops the socket itself (sign-out, expired session). */
let stoppingLive = false;
/** message id → {status, error} from frames that arrived before the messages were read. */
const earlyStatus = new Map();
const RANK = { pending: 0, received: 0, note: 0, sent: 1, delivered: 2, read: 3, failed: 4 };

// ---------------------------------------------------------------------------------------------
// Announcements and toasts

let announceTimer = 0;
function announce(text) {
  const el = $('announcer');
  clearTimeout(announceTimer);
  el.textContent = '';
  // A fresh text node after a tick makes screen readers read it even if it repeats.
  announceTimer = setTimeout(() => { el.textContent = text; }, 50);
}

let toastTimer = 0;
function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

function reportError(err) {
  if (err && err.status === 401) return; // the sign-in form is on its way
  console.warn(err);
  toast(humanError(err));
}

// ---------------------------------------------------------------------------------------------
// Panes (one at a time on narrow screens)

function setPane(pane) {
  $('app').dataset.pane = pane;
}

function back() {
  setPane('list');
  const item = document.querySelector(`[data-conversation-id="${CSS.escape(state.openId || '')}"]`);
  if (item) item.focus();
}

function showPanel() {
  setPane('panel');
  const h2 = $('contact-h');
  if (h2) { h2.setAttribute('tabindex', '-1'); h2.focus(); }
}

function hidePanel() {
  setPane('thread');
  focusTitle();
}

// ---------------------------------------------------------------------------------------------
// Opening a conversation

function statusRank(s) { return RANK[s] ?? 0; }

/** Stores a message, never letting its status move backwards (frames and reads can cross). */
function putMessage(msg) {
  const old = state.messages.get(msg.id);
  const merged = old ? { ...old, ...msg } : { ...msg };
  if (old && statusRank(old.status) > statusRank(msg.status)) {
    merged.status = old.status;
    merged.error = old.error ?? msg.error;
  }
  const early = earlyStatus.get(msg.id);
  if (early) {
    earlyStatus.delete(msg.id);
    if (statusRank(early.status) > statusRank(merged.status)) {
      merged.status = early.status;
      if (early.error) merged.error = early.error;
    }
  }
  state.messages.set(msg.id, merged);
}

function subscribe(id, on = true) {
  if (!live || !id) return;
  live.command({ type: on ? 'subscribe' : 'unsubscribe', conversation_id: id }).catch(() => {});
}

let openSeq = 0;

/** Opens a conversation (from the hash). `focus`: where keyboard focus goes. */
async function openConversationById(id, { focus = 'auto' } = {}) {
  const seq = ++openSeq;
  const prev = state.openId;
  if (prev !== id) {
    subscribe(prev, false);
    state.openId = id;
    state.messages.clear();
    state.messagesLoaded = false;
    earlyStatus.clear();
    showConversation(prev);
    subscribe(id, true);
  }
  state.unread.set(id, 0);
  emit('list');
  setPane('thread');
  let conv = state.convs.get(id);
  try {
    if (!conv) conv = await fetchConversation(id);
    else fetchConversation(id).then(() => { emit('conversation'); emit('list'); }).catch(() => {});
  } catch (err) {
    if (seq !== openSeq) return;
    state.openId = null;
    emit('conversation');
    toast(err.status === 404 ? 'That conversation does not exist or is outside your scope.' : humanError(err));
    if (location.hash) history.replaceState(null, '', location.pathname);
    setPane('list');
    return;
  }
  if (seq !== openSeq) return;
  emit('conversation');
  emit('messages', { scroll: 'bottom' });
  renderTyping();
  if (focus === 'title' || (focus === 'auto' && window.matchMedia('(max-width: 799px)').matches)) focusTitle();
  loadPanel().catch(() => {});
  try {
    const messages = await fetchMessages(id);
    if (seq !== openSeq) return;
    for (const m of messages) putMessage(m);
    state.messagesLoaded = true;
    emit('messages', { scroll: 'bottom' });
  } catch (err) {
    if (seq === openSeq) reportError(err);
  }
}

function renderTyping() { emit('typing'); }

function closeConversation() {
  if (!state.openId) return;
  subscribe(state.openId, false);
  const prev = state.openId;
  state.openId = null;
  state.messages.clear();
  showConversation(prev);
  emit('conversation');
  emit('list');
  setPane('list');
}

function route() {
  const m = /^#\/conversations\/(conv_[A-Za-z0-9_-]+)/.exec(location.hash);
  if (m) openConversationById(m[1]);
  else if (!/^#setup=/.test(location.hash)) closeConversation();
}

function open(id) {
  if (location.hash === `#/conversations/${id}`) openConversationById(id);
  else location.hash = `#/conversations/${id}`;
}

// ---------------------------------------------------------------------------------------------
// Live frames

async function onFrame(frame) {
  const d = frame.data || {};
  switch (frame.type) {
    case 'hello':
      // A new socket: subscriptions do not carry over.
      if (state.openId) subscribe(state.openId, true);
      // Opening a console can turn an offline agent online: read what it is now.
      setTimeout(loadPresence, 300);
      break;
    case 'conversation.created':
      await conversationCreated(d);
      break;
    case 'conversation.updated':
    case 'conversation.assigned':
    case 'conversation.requeued':
    case 'conversation.resolved':
      conversationChanged(frame.type, d);
      break;
    case 'message.created':
    case 'note.created':
      messageCreated(d);
      break;
    case 'message.status':
      messageStatus(d);
      break;
    case 'offer.created':
    case 'offer.declined':
    case 'offer.withdrawn':
    case 'offer.expired':
    case 'offer.accepted':
      offerFrame(frame.type, d);
      break;
    case 'presence.changed':
      if (d.user_id === state.me.id) $('presence').value = d.status;
      break;
    case 'sla.warning':
    case 'sla.breached':
      slaSignal(frame.type, d);
      break;
    case 'typing':
      typingFrame(d);
      break;
    default:
      break;
  }
}

const fetching = new Map();

/** Reads a conversation (with its contact) the page has not seen, once even if several frames ask. */
function learnConversation(id) {
  if (fetching.has(id)) return fetching.get(id);
  const p = fetchConversation(id)
    .then(() => {
      placeInList(state.convs.get(id));
      noteConversation(state.convs.get(id));
      emit('list');
      return state.convs.get(id);
    })
    .finally(() => fetching.delete(id));
  fetching.set(id, p);
  return p;
}

async function conversationCreated(d) {
  const id = d.conversation_id || d.id;
  if (!id) return;
  try {
    const conv = await learnConversation(id);
    if (conv && inView(conv)) {
      announce(`New conversation from ${contactName(state.contacts.get(conv.contact_id))}.`);
    }
  } catch (err) {
    reportError(err);
  }
}

function conversationChanged(type, d) {
  if (!d.id) return;
  const before = state.convs.get(d.id);
  const conv = mergeConversation(d);
  placeInList(conv);
  noteConversation(conv);
  // Frames carry the conversation without its contact: read it once when it is new to us.
  if (!state.contacts.has(conv.contact_id)) learnConversation(conv.id).catch(() => {});
  if (type === 'conversation.assigned' || type === 'conversation.resolved') dropOffersFor(conv.id);
  if (type === 'conversation.assigned' && conv.assignee_id === state.me.id
    && (!before || before.assignee_id !== state.me.id)) {
    const c = state.contacts.get(conv.contact_id);
    announce(`Assigned to you: ${c ? contactName(c) : 'a conversation'}.`);
  }
  if (state.openId === conv.id) emit('conversation');
  emit('list');
}

function messageCreated(msg) {
  if (!msg.conversation_id) return;
  const id = msg.conversation_id;
  const known = state.convs.get(id);
  if (known) {
    const next = { ...known };
    if (msg.direction !== 'note') next.last_message_at_ms = Math.max(known.last_message_at_ms || 0, msg.sent_at_ms || 0);
    if (msg.direction === 'inbound') next.last_inbound_at_ms = Math.max(known.last_inbound_at_ms || 0, msg.sent_at_ms || 0);
    state.convs.set(id, next);
    placeInList(next);
  } else {
    learnConversation(id).catch(() => {});
  }
  if (id === state.openId) {
    putMessage(msg);
    emit('messages', {});
    if (msg.direction === 'inbound') {
      const c = known && state.contacts.get(known.contact_id);
      announce(`New message from ${c ? contactName(c) : 'the customer'}: ${contentText(msg.content)}`);
      // The customer wrote: the WhatsApp window may have reopened.
      emit('conversation');
      const typers = state.typing.get(id);
      if (typers && typers.delete('visitor')) emit('typing');
    }
  } else if (msg.direction === 'inbound') {
    bumpUnread(id);
    if (known && known.assignee_id === state.me.id) {
      const c = state.contacts.get(known.contact_id);
      announce(`New message from ${c ? contactName(c) : 'a customer'}.`);
    }
  }
  emit('list');
}

function messageStatus(d) {
  if (!d.message_id) return;
  if (d.conversation_id !== state.openId) return;
  const error = d.error == null ? undefined : d.error;
  if (!state.messages.has(d.message_id)) {
    earlyStatus.set(d.message_id, { status: d.status, error });
    return;
  }
  putMessage({ id: d.message_id, status: d.status, ...(error !== undefined ? { error } : {}) });
  emit('messages', {});
  if (d.status === 'failed') announce('A reply could not be delivered.');
}

function slaSignal(type, d) {
  const id = d.conversation_id;
  if (!id) return;
  const level = type === 'sla.breached' ? 'breached' : 'warning';
  if (state.slaFlags.get(id) !== 'breached') state.slaFlags.set(id, level);
  emit('list');
  if (id === state.openId) loadSla(id);
  const conv = state.convs.get(id);
  if (conv && conv.assignee_id === state.me.id) {
    const c = state.contacts.get(conv.contact_id);
    announce(`SLA ${level === 'breached' ? 'breached' : 'warning'}: ${c ? contactName(c) : 'a conversation'}.`);
  }
}

function typingFrame(d) {
  if (!d.conversation_id || d.user_id === state.me.id) return;
  const key = d.visitor ? 'visitor' : d.user_id;
  if (!key) return;
  let typers = state.typing.get(d.conversation_id);
  if (!typers) { typers = new Map(); state.typing.set(d.conversation_id, typers); }
  if (d.typing) {
    const conv = state.convs.get(d.conversation_id);
    const c = conv && state.contacts.get(conv.contact_id);
    const name = d.visitor ? (c ? contactName(c) : 'The customer')
      : (state.agents && state.agents.get(d.user_id)) || 'Another agent';
    typers.set(key, { name, until: Date.now() + 8000 });
  } else {
    typers.delete(key);
  }
  emit('typing');
}

function expireTyping(now) {
  let changed = false;
  for (const typers of state.typing.values()) {
    for (const [k, t] of typers) if (t.until < now) { typers.delete(k); changed = true; }
  }
  if (changed) emit('typing');
}

/** The hub could not replay what was missed: read everything again. */
async function resync() {
  try {
    await Promise.all([loadList(), loadOffers()]);
    if (state.openId) {
      const id = state.openId;
      await fetchConversation(id);
      const messages = await fetchMessages(id);
      if (state.openId === id) {
        for (const m of messages) putMessage(m);
        state.messagesLoaded = true;
        emit('conversation');
        emit('messages', {});
        loadSla(id);
      }
    }
  } catch (err) {
    reportError(err);
  }
}

// ---------------------------------------------------------------------------------------------
// Connection state

const CONNECTION_LABEL = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
};
let wasLive = false;

function showConnection(s) {
  const el = $('connection');
  el.dataset.state = s;
  el.querySelector('.conn-label').textContent = CONNECTION_LABEL[s] || s;
  el.title = s === 'live' ? 'Changes arrive live.' : 'Changes may be late until the connection is back.';
  const banner = $('banner');
  if (s === 'live') {
    if (!banner.hidden) announce('Connection restored.');
    banner.hidden = true;
    wasLive = true;
  } else if ((s === 'reconnecting' || s === 'offline') && wasLive && !signInShowing) {
    banner.hidden = false;
    $('banner-text').textContent = s === 'reconnecting'
      ? 'Connection lost. Reconnecting… New messages will appear when it is back.'
      : 'Offline. New messages will not appear until the connection is back.';
  }
}

function stopLive() {
  if (!live) return;
  stoppingLive = true;
  try { live.stop(); } finally { stoppingLive = false; }
}

function startLive() {
  if (live) { live.start(); return; }
  live = new Live();
  live.addEventListener('state', (e) => {
    showConnection(e.detail);
    // The socket gave up by itself (its token could not be renewed): ask the API whether the
    // session is still alive; a 401 there ends it and brings the sign-in form.
    if (e.detail === 'offline' && !stoppingLive && state.me && !signInShowing) {
      api('GET', '/v1/auth/me').catch(() => {});
    }
  });
  live.addEventListener('frame', (e) => { onFrame(e.detail).catch(reportError); });
  live.addEventListener('resync', () => resync());
  showConnection('connecting');
  live.start();
}

// ---------------------------------------------------------------------------------------------
// Presence

async function loadPresence() {
  try {
    const me = await api('GET', '/v1/agents/me');
    $('presence').value = me.presence.status || me.presence.chosen_status;
  } catch {
    $('presence-wrap').hidden = true;
  }
}

async function changePresence(status) {
  const select = $('presence');
  select.disabled = true;
  try {
    if (live && live.state === 'live') {
      await live.command({ type: 'presence', status }).catch(() => api('PUT', '/v1/agents/me/presence', { status }));
    } else {
      await api('PUT', '/v1/agents/me/presence', { status });
    }
    announce(`You are ${status}.`);
  } catch (err) {
    reportError(err);
    loadPresence();
  } finally {
    select.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Session

async function enter(user) {
  signInShowing = false;
  const sameUser = state.me && state.me.id === user.id;
  if (!sameUser) {
    stopLive();
    live = null;
    resetState();
    state.me = user;
    state.view = defaultView();
    if (!availableViews().some((v) => v.id === state.view)) state.view = 'all';
  } else {
    state.me = user;
  }
  $('user-name').textContent = user.name || user.email;
  $('user-email').textContent = user.email;
  $('user-role').textContent = user.role.replace(/_/g, ' ');
  $('signin').hidden = true;
  $('signin').replaceChildren();
  $('app').hidden = false;
  renderViews();
  startLive();
  await loadAgents();
  loadCanned().then(() => refreshMode());
  loadPresence();
  loadOffers();
  try {
    await loadList();
  } catch (err) {
    reportError(err);
  }
  if (sameUser && state.openId) {
    // Back after an expired session: the draft is still in the reply box; refresh the rest.
    resync();
    emit('conversation');
    focusReply();
  } else {
    route();
    if (!state.openId) setPane('list');
    // Focus lands where work starts: the first conversation, else the view switcher.
    const first = document.querySelector('[data-conversation-id]') || document.querySelector('.view-btn[aria-pressed="true"]');
    if (first && !state.openId) first.focus();
  }
}

async function showSignIn(notice) {
  if (signInShowing) return;
  signInShowing = true;
  $('banner').hidden = true;
  const root = $('signin');
  root.replaceChildren(...kids(
    notice ? h('p', { class: 'signin-notice', role: 'status' }, notice) : null,
    h('div', { id: 'signin-form' })));
  root.hidden = false;
  $('app').hidden = true;
  closeUserMenu();
  let user;
  try {
    user = await mountSignIn($('signin-form'));
  } catch (err) {
    signInShowing = false;
    root.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, humanError(err)),
      h('button', { type: 'button', class: 'primary', onclick: () => showSignIn(notice) }, 'Try again'));
    return;
  }
  await enter(user || session.user);
}

function sessionEnded() {
  if (signingOut || signInShowing || !state.me) return;
  stopLive();
  composerSignedOut();
  const drafts = state.drafts.size;
  showSignIn(drafts
    ? 'Your session has ended. Sign in again to continue: your unsent replies are kept.'
    : 'Your session has ended. Sign in again to continue.');
}

async function doSignOut() {
  signingOut = true;
  composerSignedOut();
  stopLive();
  live = null;
  try {
    await signOut();
  } finally {
    resetState();
    state.me = null;
    wasLive = false;
    emit('list');
    emit('conversation');
    signingOut = false;
    if (location.hash) history.replaceState(null, '', location.pathname);
    showSignIn('You are signed out.');
  }
}

// ---------------------------------------------------------------------------------------------
// Header: user menu and help

function toggleUserMenu(force) {
  const btn = $('user-btn');
  const menu = $('user-menu');
  const show = force ?? menu.hidden;
  menu.hidden = !show;
  btn.setAttribute('aria-expanded', String(show));
  if (show) $('sign-out').focus();
}

function closeUserMenu() {
  if (!$('user-menu').hidden) toggleUserMenu(false);
}

function showHelp() {
  closeUserMenu();
  const dialog = $('help');
  if (!dialog.open) dialog.showModal();
}

// ---------------------------------------------------------------------------------------------
// Keyboard shortcuts

function onKey(e) {
  if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
  if (!state.me || signInShowing || $('app').hidden) return;
  if ($('help').open) return;
  if (e.key === 'Escape') {
    if (!$('user-menu').hidden) { closeUserMenu(); $('user-btn').focus(); }
    for (const menu of document.querySelectorAll('details.more-actions[open]')) {
      menu.open = false;
      menu.querySelector('summary').focus();
    }
    return;
  }
  if (isTyping(e.target)) return;
  switch (e.key) {
    case 'j':
    case 'k': {
      const id = neighbour(e.key === 'j' ? 1 : -1);
      if (!id) return;
      e.preventDefault();
      open(id);
      requestAnimationFrame(() => {
        const item = document.querySelector(`[data-conversation-id="${CSS.escape(id)}"]`);
        if (item && !window.matchMedia('(max-width: 799px)').matches) item.focus();
      });
      break;
    }
    case 'r':
      e.preventDefault();
      focusReply();
      break;
    case 'e':
      e.preventDefault();
      resolveOpen();
      break;
    case 'a':
      e.preventDefault();
      assignToMe();
      break;
    case 's':
      if (openSnooze()) e.preventDefault();
      break;
    case 'o':
      e.preventDefault();
      reopenOpen();
      break;
    case '/':
      e.preventDefault();
      setPane('list');
      focusSearch();
      break;
    case '?':
      e.preventDefault();
      showHelp();
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Boot

function wire() {
  mountList($('list-pane'), { reportError });
  mountOffers($('offers-slot'), { live: () => live, open, announce, toast });
  mountThread($('thread-pane'), { announce, toast, back, showPanel, open });
  mountComposer(threadSection(), { live: () => live, announce });
  mountPanel($('panel-pane'), { hidePanel });
  $('presence').addEventListener('change', (e) => changePresence(e.target.value));
  $('user-btn').addEventListener('click', () => toggleUserMenu());
  $('sign-out').addEventListener('click', () => doSignOut());
  $('help-btn').addEventListener('click', showHelp);
  $('menu-help').addEventListener('click', showHelp);
  $('help-close').addEventListener('click', () => $('help').close());
  $('banner-retry').addEventListener('click', () => { if (live) live.reconnectNow(); });
  document.addEventListener('click', (e) => {
    if (!$('user-menu').hidden && !e.target.closest('.user-menu')) closeUserMenu();
    for (const menu of document.querySelectorAll('details.more-actions[open]')) {
      if (!menu.contains(e.target)) menu.open = false;
    }
  });
  document.addEventListener('keydown', onKey);
  window.addEventListener('hashchange', () => { if (state.me) route(); });
  onSession((user) => { if (!user) sessionEnded(); });
  let ticks = 0;
  setInterval(() => {
    const now = Date.now();
    ticks += 1;
    tickOffers(now);
    tickPanel(now);
    expireTyping(now);
    if (ticks % 30 === 0 && state.me) { renderWindow(); refreshMode(); renderList(); }
  }, 1000);
}

wire();
showSignIn();
