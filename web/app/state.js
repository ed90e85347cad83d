// The workspace's state in memory: conversations and their contacts, unread counts, drafts,
// the list's view, and the caches of what agents reply with. Views render from here and listen
// for changes with `on(topic, fn)`; nothing here touches the DOM.

import { api } from '/ui/shared/api.js';
import { windowClosed } from './util.js';

const listeners = new Map();

/** Subscribe to a topic (`list`, `conversation`, `messages`, `offers`, `typing`, `sla`, …). */
export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(fn);
}

export function emit(topic, detail) {
  for (const fn of listeners.get(topic) || []) {
    try { fn(detail); } catch (err) { console.error(err); }
  }
}

export const state = {
  /** `GET /v1/auth/me`. */
  me: null,
  /** conversation id → conversation (as the API shows it). */
  convs: new Map(),
  /** Ids of the conversations in the current view, before the search filter. */
  listed: new Set(),
  /** contact id → contact: the list's summary (`id`, `name`, `phone`), completed with the
   * identities when a conversation's detail is read. */
  contacts: new Map(),
  /** conversation id → messages that arrived since the agent last opened it (client-side). */
  unread: new Map(),
  /** conversation id → {text, note}: half-written replies, in memory only. */
  drafts: new Map(),
  view: 'all',
  status: 'open',
  search: '',
  nextCursor: null,
  loading: false,
  /** The open conversation. */
  openId: null,
  /** The open conversation's messages: id → message. */
  messages: new Map(),
  messagesLoaded: false,
  /** conversation id → Map(who → {name, until}) */
  typing: new Map(),
  /** offer id → offer (pending offers to me). */
  offers: new Map(),
  /** user id → name: every agent the caller may list (`configure_routing`), plus those
   * learnt from the assignable agents of conversations; null until something is known. */
  agents: null,
  /** conversation id → {at, list}: `GET …/assignable-agents` (whom the caller may assign to). */
  assignable: new Map(),
  /** canned responses, loaded once per session; null when not allowed. */
  canned: undefined,
  /** inbox id → templates. */
  templates: new Map(),
  /** conversation id → SLA answer. */
  sla: new Map(),
  /** conversation id → the most severe live SLA signal seen (`warning`/`breached`). */
  slaFlags: new Map(),
};

/** Forget everything of a previous user (another user signed in on this page). */
export function resetState() {
  state.convs.clear();
  state.listed.clear();
  state.contacts.clear();
  state.unread.clear();
  state.drafts.clear();
  state.openId = null;
  state.messages.clear();
  state.messagesLoaded = false;
  state.typing.clear();
  state.offers.clear();
  state.agents = null;
  state.assignable.clear();
  state.canned = undefined;
  state.templates.clear();
  state.sla.clear();
  state.slaFlags.clear();
  state.nextCursor = null;
}

/** The scope a permission is granted at, or null. */
export function scopeOf(permission) {
  const grants = state.me && state.me.grants;
  return (grants && grants[permission]) || null;
}

// ---------------------------------------------------------------------------------------------
// Views of the list

export const VIEWS = [
  { id: 'mine', label: 'Mine' },
  { id: 'unassigned', label: 'Unassigned' },
  { id: 'team', label: 'Team' },
  { id: 'all', label: 'All' },
];

/** The views this user has: "team" needs a team, "unassigned" a scope wider than assigned. */
export function availableViews() {
  const scope = scopeOf('view_conversations');
  return VIEWS.filter((v) => {
    if (v.id === 'team') return (state.me?.team_ids || []).length > 0 && scope !== 'assigned';
    if (v.id === 'unassigned') return scope && scope !== 'assigned';
    return true;
  });
}

export function defaultView() {
  return scopeOf('view_conversations') === 'assigned' ? 'mine' : 'all';
}

/** Whether a conversation belongs in the current view (status and view; not the search). */
export function inView(conv) {
  if (!conv) return false;
  if (state.status && conv.status !== state.status) return false;
  const me = state.me && state.me.id;
  switch (state.view) {
    case 'mine': return conv.assignee_id === me;
    case 'unassigned': return !conv.assignee_id;
    case 'team': return !!conv.team_id && (state.me?.team_ids || []).includes(conv.team_id);
    default: return true;
  }
}

/**
 * Whether a conversation matches the search box, judged on what the page knows of its contact
 * (name, phone, identities). The server filters the list itself (`q=`); this only decides
 * whether a conversation that arrives live while a search is active joins the list.
 */
export function matchesSearch(conv) {
  const q = state.search.trim().toLowerCase();
  if (!q) return true;
  const c = state.contacts.get(conv.contact_id);
  if (!c) return false;
  const hay = [c.name, c.phone, c.email, ...(c.identities || []).map((i) => i.value)]
    .filter(Boolean).join(' ').toLowerCase();
  return hay.includes(q);
}

/** The ids to show, newest activity first (the server sorts the same way; live frames move). */
export function visibleIds() {
  return Array.from(state.listed)
    .map((id) => state.convs.get(id))
    .filter(Boolean)
    .sort((a, b) => (b.last_message_at_ms - a.last_message_at_ms)
      || (b.updated_at_ms - a.updated_at_ms) || (a.id < b.id ? 1 : -1))
    .map((c) => c.id);
}

// ---------------------------------------------------------------------------------------------
// Loading

/** The server-side queries of the current view: one, or one per team for "Team". */
function viewQueries() {
  const base = { limit: 100, sort: 'last_activity' };
  if (state.status) base.status = state.status;
  const q = state.search.trim();
  if (q) base.q = q.slice(0, 100);
  switch (state.view) {
    case 'mine': return [{ ...base, assignee: state.me.id }];
    case 'unassigned': return [{ ...base, assignee: 'none' }];
    case 'team': return (state.me.team_ids || []).map((team) => ({ ...base, team }));
    default: return [base];
  }
}

let loadSeq = 0;

/**
 * (Re)loads the current view from the server: status, view (`assignee`, `assignee=none`,
 * `team`) and search (`q`) are filters of `GET /v1/conversations`, sorted by last activity;
 * each item carries its contact's summary. `more` appends the next page.
 */
export async function loadList({ more = false } = {}) {
  const seq = ++loadSeq;
  state.loading = true;
  emit('list');
  try {
    const queries = viewQueries();
    const found = [];
    let next = null;
    if (queries.length === 1) {
      const q = { ...queries[0] };
      if (more && state.nextCursor) q.cursor = state.nextCursor;
      const page = await api('GET', '/v1/conversations', undefined, { query: q });
      found.push(...page.data);
      next = page.next_cursor;
    } else if (queries.length > 1) {
      // One query per team; the first page of each (teams rarely hold more than 100 open).
      const pages = await Promise.all(queries.map((q) =>
        api('GET', '/v1/conversations', undefined, { query: q })));
      for (const page of pages) found.push(...page.data);
    }
    if (seq !== loadSeq) return;
    if (!more) state.listed.clear();
    for (const conv of found) {
      mergeConversation(conv);
      // The server chose them: only a newer copy (a frame) that left the view keeps one out.
      if (inView(state.convs.get(conv.id))) state.listed.add(conv.id);
    }
    state.nextCursor = next;
  } finally {
    if (seq === loadSeq) {
      state.loading = false;
      emit('list');
    }
  }
}

/**
 * Stores a conversation from the API or a frame. Its `contact` (a list item's summary, or a
 * detail's full contact with identities) fills the contact cache; a summary never drops the
 * identities already known.
 */
export function mergeConversation(conv) {
  if (!conv || !conv.id) return null;
  const { contact, previous_assignee_id: _prev, ...plain } = conv;
  if (contact && contact.id) {
    const known = state.contacts.get(contact.id);
    state.contacts.set(contact.id, known ? { ...known, ...contact } : contact);
  }
  const old = state.convs.get(conv.id);
  // Frames and answers can cross; never let an older copy replace a newer one.
  if (old && old.updated_at_ms > plain.updated_at_ms) return old;
  const merged = old ? { ...old, ...plain } : plain;
  if (old && old.last_message_at_ms > merged.last_message_at_ms) {
    merged.last_message_at_ms = old.last_message_at_ms;
  }
  state.convs.set(conv.id, merged);
  return merged;
}

/**
 * Applies a conversation (from a frame or an action) to the list: removed when it left the
 * view; one not listed yet joins when it belongs to the view and, while a search is active,
 * when what the page knows of its contact matches the search.
 */
export function placeInList(conv) {
  if (!conv) return;
  if (!inView(conv)) state.listed.delete(conv.id);
  else if (!state.listed.has(conv.id) && matchesSearch(conv)) state.listed.add(conv.id);
}

/** `GET /v1/conversations/{id}` (with its contact), merged. */
export async function fetchConversation(id) {
  const detail = await api('GET', `/v1/conversations/${encodeURIComponent(id)}`);
  return mergeConversation(detail);
}

/** Every message of a conversation, oldest first (pages of 100). */
export async function fetchMessages(id) {
  const all = [];
  let cursor;
  for (let i = 0; i < 50; i++) {
    const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/messages`,
      undefined, { query: cursor ? { limit: 100, cursor } : { limit: 100 } });
    all.push(...page.data);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return all;
}

/** Messages in display order: provider time, then when they were stored. */
export function sortedMessages() {
  return Array.from(state.messages.values()).sort((a, b) =>
    (a.sent_at_ms - b.sent_at_ms) || (a.created_at_ms - b.created_at_ms)
    || (a.id < b.id ? -1 : 1));
}

/** Agents' names by user id, when the caller may list every agent (`configure_routing`). */
export async function loadAgents() {
  if (!scopeOf('configure_routing')) return;
  const names = state.agents || new Map();
  let cursor;
  try {
    for (let i = 0; i < 20; i++) {
      const page = await api('GET', '/v1/admin/agents', undefined,
        { query: cursor ? { limit: 100, cursor } : { limit: 100 } });
      for (const a of page.data) names.set(a.user_id, a.name);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    state.agents = names;
  } catch {
    // Names then come from the assignable agents of each conversation.
  }
}

/**
 * Whom the caller may assign a conversation to (`GET …/assignable-agents`, every page; works
 * for team leads too). Read again when older than 30 s; null when the role may not reassign.
 */
export async function loadAssignable(id, { force = false } = {}) {
  if (!scopeOf('reassign_conversations')) return null;
  const cached = state.assignable.get(id);
  if (cached && !force && Date.now() - cached.at < 30000) return cached.list;
  const list = [];
  let cursor;
  for (let i = 0; i < 20; i++) {
    const page = await api('GET', `/v1/conversations/${encodeURIComponent(id)}/assignable-agents`,
      undefined, { query: cursor ? { limit: 100, cursor } : { limit: 100 } });
    list.push(...page.data);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  state.assignable.set(id, { at: Date.now(), list });
  if (!state.agents) state.agents = new Map();
  for (const a of list) state.agents.set(a.id, a.name);
  return list;
}

export function agentName(userId) {
  if (!userId) return '';
  if (state.me && userId === state.me.id) return 'You';
  return (state.agents && state.agents.get(userId)) || 'another agent';
}

/** Canned responses (all pages), or null when the role may not read them. */
export async function loadCanned() {
  if (state.canned !== undefined) return state.canned;
  const list = [];
  let cursor;
  try {
    for (let i = 0; i < 20; i++) {
      const page = await api('GET', '/v1/canned-responses', undefined,
        { query: cursor ? { limit: 100, cursor } : { limit: 100 } });
      list.push(...page.data);
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    state.canned = list.sort((a, b) => a.short_code.localeCompare(b.short_code));
  } catch {
    state.canned = null;
  }
  return state.canned;
}

/** The templates registered for an inbox. */
export async function loadTemplates(inboxId) {
  if (state.templates.has(inboxId)) return state.templates.get(inboxId);
  const page = await api('GET', '/v1/templates', undefined,
    { query: { inbox_id: inboxId, limit: 100 } });
  state.templates.set(inboxId, page.data);
  return page.data;
}

export function openConversation() {
  return state.openId ? state.convs.get(state.openId) : null;
}

export function isWindowClosed() {
  return windowClosed(openConversation());
}

export function bumpUnread(id, n = 1) {
  state.unread.set(id, (state.unread.get(id) || 0) + n);
}
