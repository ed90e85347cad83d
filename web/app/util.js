// Small pure helpers of the agent workspace: formatting, ids, message text. No DOM state here.

const CHANNELS = { whatsapp: 'WhatsApp', sms: 'SMS', webchat: 'Web chat' };

/** A channel's name for people. */
export function channelName(channel) {
  return CHANNELS[channel] || channel || '';
}

/** The name shown for a contact: its name, else its phone, else its first identity. */
export function contactName(contact) {
  if (!contact) return 'Unknown contact';
  if (contact.erased_at_ms) return 'Erased contact';
  if (contact.name) return contact.name;
  if (contact.phone) return contact.phone;
  if (contact.email) return contact.email;
  const first = (contact.identities || [])[0];
  if (first && first.kind === 'web_visitor') return 'Web visitor';
  return first ? first.value : 'Unknown contact';
}

const pad = (n) => String(n).padStart(2, '0');

/** A time of day today, else a short date and time. */
export function shortTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const now = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === now.toDateString()) return hm;
  const sameYear = d.getFullYear() === now.getFullYear();
  const date = d.toLocaleDateString(undefined, sameYear
    ? { month: 'short', day: 'numeric' }
    : { year: 'numeric', month: 'short', day: 'numeric' });
  return `${date} ${hm}`;
}

/** A full, unambiguous time for tooltips and datetime attributes. */
export function fullTime(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

/** "Thu, Dec 4, 09:00": a day and time people read at a glance (snooze times). */
export function dayTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const sameYear = d.getFullYear() === new Date().getFullYear();
  return d.toLocaleString(undefined, {
    weekday: 'short', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
    ...(sameYear ? {} : { year: 'numeric' }),
  });
}

export function isoTime(ms) {
  return ms ? new Date(ms).toISOString() : '';
}

/** "4m 05s", "2h 10m", "3d 4h"; a negative span gets a minus sign ("overdue" is the caller's). */
export function duration(ms) {
  const sign = ms < 0 ? '−' : '';
  let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${sign}${d}d ${hr}h`;
  if (hr) return `${sign}${hr}h ${pad(m)}m`;
  if (m) return `${sign}${m}m ${pad(s)}s`;
  return `${sign}${s}s`;
}

/** A fresh random key (Idempotency-Key, refs). Works outside secure contexts too. */
export function newKey(prefix = 'k') {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') {
    try { return `${prefix}-${crypto.randomUUID()}`; } catch { /* insecure context */ }
  }
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `${prefix}-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** The text to show and announce for a message's content (tagged by `type`). */
export function contentText(content) {
  if (!content || typeof content !== 'object') return '';
  switch (content.type) {
    case 'text': return content.text || '';
    case 'media': return content.caption || '';
    case 'location': {
      const parts = [content.name, content.address].filter(Boolean);
      const where = `${content.latitude}, ${content.longitude}`;
      return `Location: ${parts.length ? `${parts.join(', ')} (${where})` : where}`;
    }
    case 'interactive': return content.title || content.id || `(${content.kind})`;
    case 'reaction': return content.emoji ? `Reacted ${content.emoji}` : 'Removed a reaction';
    case 'contacts': return 'Shared contact card';
    case 'template': {
      const params = (content.parameters || []).join(', ');
      return `Template “${content.name}” (${content.language})${params ? `: ${params}` : ''}`;
    }
    case 'erased': return '(erased)';
    case 'unsupported': return `(unsupported ${content.provider_type || 'message'})`;
    default: return content.text || `(${content.type || 'message'})`;
  }
}

/**
 * The failure reason of a message: its `error` field is a JSON list text
 * (`[{"code","title","details"}]`), a `message.status` frame carries the parsed list.
 */
export function failureReason(error) {
  if (error == null || error === '') return '';
  let list = error;
  if (typeof error === 'string') {
    try { list = JSON.parse(error); } catch { return error; }
  }
  if (!Array.isArray(list)) list = [list];
  return list.map((e) => {
    if (e == null) return '';
    if (typeof e !== 'object') return String(e);
    const text = e.title || e.message || e.reason || e.details || '';
    return e.code ? `${text} (${e.code})` : text;
  }).filter(Boolean).join('; ');
}

/** At most one call per `ms`; the first goes through at once. */
export function throttle(fn, ms) {
  let last = 0;
  return (...args) => {
    const now = Date.now();
    if (now - last >= ms) { last = now; fn(...args); }
  };
}

/** Whether a keyboard event's target is somewhere the user types. */
export function isTyping(target) {
  if (!target || !(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag !== 'INPUT') return false;
  return !['button', 'checkbox', 'radio', 'submit', 'reset'].includes(target.type);
}

/** The `{{name}}` placeholders still in a text. */
export function placeholders(text) {
  return Array.from(text.matchAll(/\{\{\s*([^{}]+?)\s*\}\}/g), (m) => m[1]);
}

export const WHATSAPP_WINDOW_MS = 24 * 60 * 60 * 1000;

/** Whether a free-form reply is refused: WhatsApp, and the customer last wrote > 24 h ago. */
export function windowClosed(conv, now = Date.now()) {
  if (!conv || conv.channel !== 'whatsapp') return false;
  return !conv.last_inbound_at_ms || conv.last_inbound_at_ms < now - WHATSAPP_WINDOW_MS;
}

/** Children for `replaceChildren`, which (unlike `h`) would print null as "null". */
export function kids(...children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
}

/** "Snoozed until 09:00" / "Snoozed until Dec 4 09:00" for a snoozed conversation, else ''. */
export function snoozedText(conv) {
  if (!conv || conv.status !== 'snoozed') return '';
  return conv.snoozed_until_ms ? `Snoozed until ${shortTime(conv.snoozed_until_ms)}` : 'Snoozed';
}

/** The longest snooze the hub accepts (90 days). */
export const MAX_SNOOZE_MS = 90 * 24 * 60 * 60 * 1000;

/** The snooze presets, in local time: in 1 hour, tomorrow 9:00, next Monday 9:00. */
export function snoozePresets(now = new Date()) {
  const at9 = (days) => {
    const d = new Date(now.getFullYear(), now.getMonth(), now.getDate() + days, 9, 0, 0, 0);
    return d.getTime();
  };
  // Next Monday: 1 to 7 days ahead (on a Monday, the one of next week).
  const toMonday = ((8 - now.getDay()) % 7) || 7;
  return [
    { id: 'hour', label: 'In 1 hour', until: now.getTime() + 60 * 60 * 1000 },
    { id: 'tomorrow', label: 'Tomorrow 9:00', until: at9(1) },
    { id: 'monday', label: 'Next Monday 9:00', until: at9(toMonday) },
  ];
}

/** A `datetime-local` input's value for a time (local, to the minute). */
export function localInputValue(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
