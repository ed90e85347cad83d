// Live queues: GET /v1/queues/stats, kept live by `queue.stats` frames (one inbox each).
import { api } from '/ui/shared/api.js';
import { h, clear, sectionHead, card, table, fmtDuration, fmtTime, badge, CHANNEL_LABEL } from '../util.js';

export async function render(host) {
  let stats = { inboxes: [], teams: [], generated_at_ms: null };
  const updated = h('p', { class: 'muted', role: 'status', 'aria-live': 'off' });
  const inboxHost = h('div');
  const teamHost = h('div');
  const refresh = h('button', { type: 'button', class: 'btn-small', onclick: () => load() }, 'Refresh');
  host.append(sectionHead('Live queues', refresh),
    h('p', { class: 'lead' }, 'Waiting, offered and assigned conversations per inbox and team, updated live as they change.'),
    updated, inboxHost, teamHost);

  const bar = (free, total) => {
    const pct = total > 0 ? Math.round(((total - free) / total) * 100) : 0;
    return h('span', { class: 'bar-cell' },
      h('meter', { min: 0, max: 100, value: pct, 'aria-label': `${pct}% of slots in use` }),
      ` ${total - free}/${total} in use`);
  };
  const columns = (kind) => [
    { label: kind === 'inbox' ? 'Inbox' : 'Team', cell: (q) => [h('strong', {}, q.name), q.channel ? [' ', badge(CHANNEL_LABEL[q.channel] || q.channel, q.channel)] : null] },
    { label: 'Waiting', class: 'num', cell: (q) => h('span', { class: q.waiting > 0 ? 'hot' : '' }, String(q.waiting)) },
    { label: 'Offered', class: 'num', cell: (q) => String(q.offered) },
    { label: 'Assigned', class: 'num', cell: (q) => String(q.assigned) },
    { label: 'Longest wait', class: 'num', cell: (q) => (q.longest_wait_ms ? fmtDuration(q.longest_wait_ms) : '—') },
    { label: 'Agents available', class: 'num', cell: (q) => String(q.available_agents) },
    { label: 'Capacity', cell: (q) => bar(q.capacity_free, q.capacity_total) },
  ];

  function draw() {
    clear(inboxHost);
    clear(teamHost);
    inboxHost.appendChild(card('Inboxes', table(columns('inbox'), stats.inboxes, { caption: 'Queues by inbox', empty: 'No inboxes.', rowAttrs: (q) => ({ 'data-queue-id': q.id }) })));
    teamHost.appendChild(card('Teams', table(columns('team'), stats.teams, { caption: 'Queues by team', empty: 'No teams.', rowAttrs: (q) => ({ 'data-queue-id': q.id }) })));
    updated.textContent = stats.generated_at_ms ? `Updated ${fmtTime(stats.generated_at_ms)}` : '';
  }

  async function load() {
    stats = await api('GET', '/v1/queues/stats');
    draw();
  }

  let pending = null;
  function onFrame(frame) {
    if (!frame || frame.type !== 'queue.stats' || !frame.data) return;
    const q = frame.data;
    const i = stats.inboxes.findIndex((x) => x.id === q.id);
    if (i >= 0) stats.inboxes[i] = { ...stats.inboxes[i], ...q };
    else if (q.channel || (q.id || '').startsWith('inb_')) stats.inboxes.push(q);
    stats.generated_at_ms = Date.now();
    // Team figures are not in the frame: refetch them, at most once every 2 s.
    if (!pending) pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 2000);
    draw();
  }

  await load();
  return {
    onFrame,
    onResync: () => load().catch(() => {}),
    cleanup: () => clearTimeout(pending),
  };
}
