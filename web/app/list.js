// The left pane: view switcher (mine / unassigned / team / all), status filter, contact search
// and the conversation list, newest activity first. The server filters and sorts
// (`assignee`, `assignee=none`, `team`, `status`, `q`, `sort=last_activity`); live frames move
// items afterwards. Items are links to `#/conversations/<id>` carrying `data-conversation-id`
// and `data-unread` (test hooks).

import { h } from '/ui/shared/api.js';
import {
  state, on, availableViews, visibleIds, loadList, agentName,
} from './state.js';
import { channelName, contactName, shortTime, fullTime, snoozedText } from './util.js';

const STATUSES = [
  { id: 'open', label: 'Open' },
  { id: 'pending', label: 'Pending' },
  { id: 'snoozed', label: 'Snoozed' },
  { id: 'resolved', label: 'Resolved' },
  { id: '', label: 'Any status' },
];

let els = null;
let onError = () => {};
let searchTimer = 0;
/** The search text the list was last loaded with. */
let searched = '';
const SEARCH_DELAY_MS = 300;

/** The search box changed: ask the server (`q=`) once typing pauses. */
function searchChanged(value, { now = false } = {}) {
  clearTimeout(searchTimer);
  state.search = value;
  const run = () => {
    const q = state.search.trim();
    if (q === searched && !now) return;
    searched = q;
    state.nextCursor = null;
    loadList().catch(onError);
  };
  if (now) run();
  else searchTimer = setTimeout(run, SEARCH_DELAY_MS);
}

/** Builds the list pane inside `root` (the `nav`). */
export function mountList(root, { reportError }) {
  onError = reportError;
  const views = h('div', { class: 'views', role: 'group', 'aria-label': 'Which conversations' });
  const status = h('select', { id: 'status-filter', onchange: (e) => changeStatus(e.target.value) },
    STATUSES.map((s) => h('option', { value: s.id }, s.label)));
  const search = h('input', {
    id: 'search', type: 'search', placeholder: 'Search contacts', autocomplete: 'off',
    'aria-keyshortcuts': '/',
    maxlength: '100',
    oninput: (e) => searchChanged(e.target.value),
    onkeydown: (e) => {
      if (e.key === 'Escape' && e.target.value) { e.target.value = ''; searchChanged('', { now: true }); }
      if (e.key === 'Enter') { e.preventDefault(); searchChanged(e.target.value, { now: true }); }
      if (e.key === 'ArrowDown') { e.preventDefault(); focusItem(0); }
    },
  });
  const list = h('ul', { id: 'conv-list', class: 'conv-list', 'aria-label': 'Conversations' });
  const empty = h('p', { class: 'list-empty', hidden: true });
  const more = h('button', {
    type: 'button', class: 'ghost load-more', hidden: true,
    onclick: () => loadList({ more: true }).catch(onError),
  }, 'Load older conversations');
  const count = h('p', { class: 'visually-hidden', 'aria-live': 'polite', id: 'list-count' });
  root.append(
    h('div', { class: 'list-controls' },
      views,
      h('div', { class: 'list-filters' },
        h('label', { class: 'visually-hidden', for: 'status-filter' }, 'Status'), status,
        h('label', { class: 'visually-hidden', for: 'search' }, 'Search by contact'), search)),
    list, empty, more, count);
  els = { views, status, search, list, empty, more, count };
  on('list', render);
  on('typing', render);
}

/** Re-creates the view buttons for the signed-in user's grants. */
export function renderViews() {
  els.views.replaceChildren(...availableViews().map((v) => h('button', {
    type: 'button', class: 'view-btn', 'data-view': v.id,
    'aria-pressed': String(state.view === v.id),
    onclick: () => changeView(v.id),
  }, v.label)));
  els.status.value = state.status;
}

function changeView(view) {
  if (state.view === view) return;
  state.view = view;
  state.nextCursor = null;
  renderViews();
  loadList().catch(onError);
}

function changeStatus(status) {
  state.status = status;
  state.nextCursor = null;
  loadList().catch(onError);
}

export function focusSearch() {
  els.search.focus();
  els.search.select();
}

function focusItem(index) {
  const links = els.list.querySelectorAll('a[data-conversation-id]');
  if (links[index]) links[index].focus();
}

/** The id of the conversation `step` places from the open one (j/k). */
export function neighbour(step) {
  const ids = visibleIds();
  if (!ids.length) return null;
  const at = ids.indexOf(state.openId);
  if (at < 0) return ids[step > 0 ? 0 : ids.length - 1];
  return ids[Math.min(ids.length - 1, Math.max(0, at + step))];
}

function item(conv) {
  const contact = state.contacts.get(conv.contact_id);
  const name = contact ? contactName(contact) : '…';
  const unread = state.unread.get(conv.id) || 0;
  const open = conv.id === state.openId;
  const sla = state.slaFlags.get(conv.id);
  const typing = state.typing.get(conv.id);
  const meta = [];
  meta.push(h('span', { class: `badge badge-channel ch-${conv.channel}` }, channelName(conv.channel)));
  if (!state.status || conv.status !== 'open') {
    meta.push(h('span', { class: `badge badge-status st-${conv.status}` }, conv.status));
  }
  const snoozed = snoozedText(conv);
  if (snoozed) meta.push(h('span', { class: 'conv-snoozed', title: fullTime(conv.snoozed_until_ms) }, snoozed));
  if (conv.assignee_id) meta.push(h('span', { class: 'conv-assignee' }, agentName(conv.assignee_id)));
  else if (conv.status !== 'resolved') meta.push(h('span', { class: 'conv-assignee muted' }, conv.routing_state === 'offered' ? 'offered' : 'waiting'));
  if (sla) meta.push(h('span', { class: `badge badge-sla sla-${sla}` }, sla === 'breached' ? 'SLA breached' : 'SLA warning'));
  for (const label of (conv.labels || []).slice(0, 3)) meta.push(h('span', { class: 'badge badge-label' }, label));
  const described = [
    name,
    channelName(conv.channel),
    conv.status,
    snoozed,
    unread ? `${unread} unread` : null,
    sla ? `SLA ${sla}` : null,
  ].filter(Boolean).join(', ');
  return h('li', { class: 'conv-li' },
    h('a', {
      href: `#/conversations/${conv.id}`,
      class: `conv-item${open ? ' is-open' : ''}${unread ? ' has-unread' : ''}`,
      'data-conversation-id': conv.id,
      'data-unread': String(unread),
      'aria-current': open ? 'true' : null,
      'aria-label': described,
    },
    h('span', { class: 'conv-top' },
      h('span', { class: 'conv-name' }, name),
      h('time', { class: 'conv-time', datetime: new Date(conv.last_message_at_ms).toISOString(), title: fullTime(conv.last_message_at_ms) }, shortTime(conv.last_message_at_ms))),
    h('span', { class: 'conv-meta' }, meta,
      typing && typing.size ? h('span', { class: 'conv-typing' }, 'typing…') : null,
      unread ? h('span', { class: 'unread', 'aria-hidden': 'true' }, String(unread)) : null)));
}

/** Redraws the list, keeping keyboard focus on the same conversation. */
export function render() {
  if (!els) return;
  const focusedId = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.conversationId : undefined;
  const ids = visibleIds();
  els.list.replaceChildren(...ids.map((id) => item(state.convs.get(id))));
  els.list.setAttribute('aria-busy', String(state.loading));
  if (focusedId) {
    const again = els.list.querySelector(`[data-conversation-id="${CSS.escape(focusedId)}"]`);
    if (again) again.focus();
  }
  els.empty.hidden = ids.length > 0;
  els.empty.textContent = state.loading ? 'Loading conversations…'
    : state.search ? 'No contact in this view matches the search.'
      : 'No conversations here right now.';
  els.more.hidden = !state.nextCursor || state.loading;
  const count = state.loading ? '' : `${ids.length} conversation${ids.length === 1 ? '' : 's'}`;
  if (els.count.textContent !== count) els.count.textContent = count;
}
