// Dead letters: replies whose delivery ended without the provider accepting them, with replay.
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, toast, sectionHead, card, table, fmtTime, busy } from '../util.js';

export async function render(host) {
  let rows = [];
  let cursor = null;
  const listHost = h('div', { 'aria-live': 'polite' });
  const more = h('button', { type: 'button', class: 'btn-small', hidden: true, onclick: () => load(true) }, 'Older');
  const refresh = h('button', { type: 'button', class: 'btn-small', onclick: () => load(false) }, 'Refresh');
  host.append(sectionHead('Dead letters', refresh),
    h('p', { class: 'lead' }, 'Replies the provider refused for good, or that ran out of attempts. Fix the cause (credentials, template, number), then replay: the reply is queued again with a fresh attempt budget.'),
    card('Failed replies', listHost, more));

  function draw() {
    clear(listHost);
    listHost.appendChild(table([
      { label: 'Failed', cell: (d) => fmtTime(d.failed_at_ms) },
      { label: 'Message', cell: (d) => h('code', {}, d.id) },
      { label: 'Conversation', cell: (d) => h('a', { href: `/#/conversations/${encodeURIComponent(d.conversation_id)}` }, d.conversation_id) },
      { label: 'Inbox', cell: (d) => h('code', {}, d.inbox_id) },
      { label: 'Reason', cell: (d) => [d.code ? h('code', {}, d.code) : null, d.code && d.reason ? ' ' : null, d.reason || (d.code ? '' : '—')] },
      { label: 'Attempts', class: 'num', cell: (d) => String(d.attempts) },
      { label: 'Replays', class: 'num', cell: (d) => String(d.replays) },
      { label: 'Actions', cell: (d) => {
        const b = h('button', { type: 'button', class: 'btn-small primary', 'data-replay': d.id, 'aria-label': `Replay ${d.id}` }, 'Replay');
        b.addEventListener('click', () => busy(b, async () => {
          try {
            const out = await api('POST', `/v1/admin/dead-letters/${encodeURIComponent(d.id)}/replay`);
            toast(`Queued again (${out.status || 'pending'})`);
            rows = rows.filter((x) => x.id !== d.id);
            draw();
          } catch (err) { toast(humanError(err), 'error'); }
        }));
        return b;
      } },
    ], rows, { caption: 'Dead letters', empty: 'No dead letters: every reply was accepted or is still being tried.' }));
  }

  async function load(append) {
    const page = await api('GET', '/v1/admin/dead-letters', undefined, { query: { limit: 50, cursor: append ? cursor : undefined } });
    rows = append ? rows.concat(page.data || []) : page.data || [];
    cursor = page.next_cursor;
    more.hidden = !cursor;
    draw();
  }

  await load(false);
  return {};
}
