// Offers to the signed-in agent (`GET /v1/offers`, live `offer.created`): a card per offer naming
// the waiting contact (`contact_name`), with a countdown and Accept / Decline. Declined,
// withdrawn, expired or accepted offers disappear.

import { api, h, humanError } from '/ui/shared/api.js';
import {
  state, on, emit, placeInList, mergeConversation,
} from './state.js';
import { channelName, contactName, duration } from './util.js';

let els = null;
let ctx = null;

/** `context`: `live()`, `open(id)`, `announce(text)`. */
export function mountOffers(root, context) {
  ctx = context;
  const list = h('ul', { class: 'offer-list', 'aria-label': 'Offers waiting for you' });
  const region = h('section', { class: 'offers', id: 'offers', 'aria-label': 'Offers', hidden: true, 'aria-live': 'polite' }, list);
  root.append(region);
  els = { region, list };
  on('offers', render);
}

export async function loadOffers() {
  try {
    const page = await api('GET', '/v1/offers');
    state.offers.clear();
    for (const offer of page.data) if (offer.state === 'pending') state.offers.set(offer.id, offer);
  } catch {
    // An API key or a user without offers: nothing to show.
  }
  emit('offers');
}

/** A live offer frame. */
export async function offerFrame(type, offer) {
  if (!offer || !offer.id) return;
  if (type === 'offer.created') {
    if (offer.agent_id !== state.me.id || offer.state !== 'pending') return;
    state.offers.set(offer.id, offer);
    emit('offers');
    ctx.announce(`New conversation offered to you: ${who(offer)}. Accept within ${duration(offer.expires_at_ms - Date.now())}.`);
  } else if (state.offers.delete(offer.id)) {
    emit('offers');
  }
}

/** The conversation was assigned: its offers are answered. */
export function dropOffersFor(conversationId) {
  let dropped = false;
  for (const [id, o] of state.offers) {
    if (o.conversation_id === conversationId) { state.offers.delete(id); dropped = true; }
  }
  if (dropped) emit('offers');
}

/** Who is waiting: the offer names the contact (an agent cannot read the conversation yet). */
function who(offer) {
  if (offer.contact_name) return offer.contact_name;
  const conv = state.convs.get(offer.conversation_id);
  const contact = conv && state.contacts.get(conv.contact_id);
  return contact ? contactName(contact) : 'A customer';
}

function render() {
  const now = Date.now();
  const offers = Array.from(state.offers.values()).filter((o) => o.expires_at_ms > now)
    .sort((a, b) => a.expires_at_ms - b.expires_at_ms);
  els.region.hidden = offers.length === 0;
  els.list.replaceChildren(...offers.map((offer) => {
    const error = h('p', { class: 'field-error', hidden: true });
    const accept = h('button', { type: 'button', class: 'primary offer-accept', 'data-offer-id': offer.id, onclick: () => answer(offer, true, error) }, 'Accept');
    const decline = h('button', { type: 'button', class: 'offer-decline', onclick: () => answer(offer, false, error) }, 'Decline');
    return h('li', { class: 'offer-card', 'data-offer-id': offer.id, 'data-offer-conversation': offer.conversation_id },
      h('p', { class: 'offer-title' }, h('strong', { class: 'offer-contact' }, who(offer)), ` · ${channelName(offer.channel)}`),
      h('p', { class: 'offer-left' },
        h('span', { 'data-expires-ms': String(offer.expires_at_ms), class: 'countdown', role: 'timer', 'aria-live': 'off' },
          `${duration(offer.expires_at_ms - now)} left`)),
      h('div', { class: 'offer-actions' }, accept, decline), error);
  }));
}

async function answer(offer, accept, errorEl) {
  errorEl.hidden = true;
  const action = accept ? 'accept' : 'decline';
  try {
    const conv = await api('POST', `/v1/offers/${encodeURIComponent(offer.id)}/${action}`);
    state.offers.delete(offer.id);
    emit('offers');
    if (accept && conv && conv.id) {
      const merged = mergeConversation(conv);
      placeInList(merged);
      emit('list');
      ctx.announce(`Accepted: ${who(offer)}.`);
      ctx.open(conv.id);
    } else {
      ctx.announce('Offer declined.');
    }
  } catch (err) {
    if (err.status === 409 || err.status === 404) {
      state.offers.delete(offer.id);
      emit('offers');
      ctx.toast(err.status === 409 ? 'That offer was already answered, expired or withdrawn.' : humanError(err));
      return;
    }
    errorEl.textContent = humanError(err);
    errorEl.hidden = false;
  }
}

/** The one-second tick: countdowns, and expired offers go. */
export function tickOffers(now) {
  if (!els || els.region.hidden) return;
  let expired = false;
  for (const el of els.list.querySelectorAll('[data-expires-ms]')) {
    const left = Number(el.dataset.expiresMs) - now;
    if (left <= 0) expired = true;
    else el.textContent = `${duration(left)} left`;
  }
  if (expired) {
    for (const [id, o] of state.offers) if (o.expires_at_ms <= now) state.offers.delete(id);
    render();
  }
}
