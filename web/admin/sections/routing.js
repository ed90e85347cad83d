// Routing: the ordered rules, the rule editor (validated as you type), the simulate panel and
// the skill catalogue.
import { api, humanError } from '/ui/shared/api.js';
import {
  h, clear, field, input, select, setOptions, toast, fetchAll, sectionHead, card, busy,
  confirmDialog, formError, table, fmtTime, fmtDuration, CHANNEL_LABEL,
} from '../util.js';
import { exprField } from '../expr.js';

const VALIDATE_DELAY = 300;
const MAX_NAME = 200;

export async function render(host, ctx = {}) {
  let rules = [];
  let inboxes = [];
  let agentNames = new Map();
  let editor = null; // the open editor, see openEditor()
  let destroyed = false;

  const status = h('p', { class: 'visually-hidden', role: 'status', 'aria-live': 'polite' });
  const newButton = h('button', { type: 'button', id: 'new-rule', class: 'primary', onclick: () => openEditor(null) }, 'New rule');
  const listHost = h('div', { class: 'rule-list-host' });
  const editorHost = h('div', { class: 'editor-host' });
  const simHost = h('div');
  const skillsHost = h('div');

  host.append(
    sectionHead('Routing', newButton),
    status,
    h('p', { class: 'lead' }, 'Rules are tried from the top; the first whose match condition holds routes the conversation through its steps. Anything no rule matches goes to its inbox\'s team.'),
    h('div', { class: 'routing-grid' },
      h('div', { class: 'routing-main' },
        card('Rules', listHost),
        editorHost),
      h('div', { class: 'routing-side' }, simHost)),
    skillsHost,
  );

  // --- rules list -----------------------------------------------------------------------

  async function loadRules() {
    const page = await api('GET', '/v1/admin/routing-rules');
    rules = page.data || [];
    renderList();
  }

  function renderList() {
    clear(listHost);
    if (!rules.length) {
      listHost.appendChild(h('p', { class: 'empty' }, 'No rules yet: every conversation goes to its inbox\'s team. Create one with "New rule".'));
    } else {
      const ol = h('ol', { class: 'rule-list', id: 'rule-list', 'aria-label': 'Routing rules in order' });
      rules.forEach((r, i) => ol.appendChild(ruleItem(r, i)));
      listHost.appendChild(ol);
    }
    listHost.appendChild(h('p', { class: 'default-rule' },
      h('span', { class: 'badge' }, 'default'), ' Everything else: the inbox\'s team, or any agent when the inbox has none.'));
  }

  function ruleItem(r, i) {
    const li = h('li', {
      class: ['rule-item', editor && editor.id === r.id && 'editing'], draggable: true, 'data-rule-id': r.id,
    },
    h('span', { class: 'drag-handle', 'aria-hidden': 'true', title: 'Drag to reorder' }, '⠿'),
    h('span', { class: 'pos' }, String(r.position ?? i + 1)),
    h('div', { class: 'rule-summary' },
      h('strong', { class: 'rule-name' }, r.name),
      h('code', { class: 'rule-match' }, r.match),
      h('span', { class: 'muted' }, `${r.steps.length} step${r.steps.length === 1 ? '' : 's'} · ${r.mode === 'offer' ? `offer (${r.offer_timeout_secs}s)` : 'auto-assign'}`)),
    h('div', { class: 'rule-actions' },
      h('button', { type: 'button', class: 'btn-small', 'data-action': 'edit', onclick: () => openEditor(r), 'aria-label': `Edit rule ${r.name}` }, 'Edit'),
      h('button', { type: 'button', class: 'btn-small', 'data-action': 'up', disabled: i === 0, onclick: () => move(i, -1), 'aria-label': `Move rule ${r.name} up` }, '↑'),
      h('button', { type: 'button', class: 'btn-small', 'data-action': 'down', disabled: i === rules.length - 1, onclick: () => move(i, 1), 'aria-label': `Move rule ${r.name} down` }, '↓')));
    li.addEventListener('dragstart', (e) => {
      e.dataTransfer.setData('text/plain', r.id);
      e.dataTransfer.effectAllowed = 'move';
      li.classList.add('dragging');
    });
    li.addEventListener('dragend', () => li.classList.remove('dragging'));
    li.addEventListener('dragover', (e) => { e.preventDefault(); li.classList.add('drop-target'); });
    li.addEventListener('dragleave', () => li.classList.remove('drop-target'));
    li.addEventListener('drop', (e) => {
      e.preventDefault();
      li.classList.remove('drop-target');
      const from = rules.findIndex((x) => x.id === e.dataTransfer.getData('text/plain'));
      if (from < 0 || from === i) return;
      const ids = rules.map((x) => x.id);
      const [moved] = ids.splice(from, 1);
      ids.splice(i, 0, moved);
      reorder(ids, moved);
    });
    return li;
  }

  function move(i, delta) {
    const j = i + delta;
    if (j < 0 || j >= rules.length) return;
    const ids = rules.map((r) => r.id);
    [ids[i], ids[j]] = [ids[j], ids[i]];
    reorder(ids, rules[i].id, delta < 0 ? 'up' : 'down');
  }

  async function reorder(ids, movedId, focusAction) {
    try {
      const page = await api('PUT', '/v1/admin/routing-rules/order', { ids });
      rules = page.data || [];
      renderList();
      const r = rules.find((x) => x.id === movedId);
      status.textContent = r ? `Rule ${r.name} is now number ${r.position}.` : 'Rules reordered.';
      const li = listHost.querySelector(`[data-rule-id="${CSS.escape(movedId)}"]`);
      if (li) {
        const btn = li.querySelector(`[data-action="${focusAction || 'edit'}"]`);
        (btn && !btn.disabled ? btn : li.querySelector('[data-action="edit"]')).focus();
      }
    } catch (err) {
      toast(humanError(err), 'error');
      loadRules().catch(() => {});
    }
  }

  // --- the rule editor ------------------------------------------------------------------

  function openEditor(rule) {
    if (editor) editor.dispose();
    editor = ruleEditor(rule);
    clear(editorHost);
    editorHost.appendChild(editor.el);
    renderList();
    editor.focus();
  }

  function closeEditor() {
    if (editor) editor.dispose();
    editor = null;
    clear(editorHost);
    renderList();
    newButton.focus();
  }

  function ruleEditor(rule) {
    const state = { id: rule ? rule.id : null, touched: new Set(), seq: 0, timer: 0, lastProblems: [] };
    const form = h('form', { class: 'card rule-editor', novalidate: true, 'aria-labelledby': 'rule-editor-title' });
    const title = h('h2', { id: 'rule-editor-title' }, rule ? `Edit rule: ${rule.name}` : 'New rule');
    const general = formError();
    const saved = h('p', { class: 'saved-note', role: 'status', 'aria-live': 'polite' });

    const name = field('Rule name', input({ id: 'rule-name', maxlength: MAX_NAME, autocomplete: 'off', value: rule ? rule.name : '', required: true }), { name: 'name' });
    name.input.addEventListener('input', () => { state.touched.add('name'); name.error.textContent = ''; name.input.removeAttribute('aria-invalid'); });

    const match = exprField({
      field: 'match', label: 'Match condition', rows: 3, value: rule ? rule.match : '',
      placeholder: 'conv.channel == "whatsapp" and keyword("refund")',
      hint: 'Which conversations this rule takes. Reads conv.* (bare names mean conv.<name>): channel, inbox, language, labels, priority, first_message, contact.vip, contact.tier; keyword("word").',
      onInput: () => touched('match'),
    });

    const stepsHost = h('ol', { class: 'steps' });
    const stepsError = h('div', { class: 'field-error', 'data-error-for': 'steps', 'aria-live': 'polite' });
    const steps = [];
    const addStepButton = h('button', { type: 'button', class: 'btn-small', onclick: () => { addStep({ target: '', priority: 0, timeout_secs: null }); renumber(); steps[steps.length - 1].expr.textarea.focus(); } }, 'Add step');

    const mode = field('Hand-over', select([['auto', 'Assign at once (auto)'], ['offer', 'Offer to the agent (accept/decline)']], { value: rule ? rule.mode : 'auto' }), { name: 'mode' });
    const offerTimeout = field('Offer timeout (seconds)', input({ type: 'number', min: 1, max: 3600, step: 1, inputmode: 'numeric', value: String(rule ? rule.offer_timeout_secs : 30) }), { name: 'offer_timeout_secs', hint: '1–3600: how long an offer waits for the agent.' });
    const syncMode = () => { offerTimeout.wrap.hidden = mode.input.value !== 'offer'; };
    mode.input.addEventListener('change', syncMode);
    syncMode();

    const saveButton = h('button', { type: 'submit', id: 'save-rule', class: 'primary' }, rule ? 'Save rule' : 'Create rule');
    const cancelButton = h('button', { type: 'button', onclick: closeEditor }, 'Close');
    const deleteButton = h('button', { type: 'button', class: 'danger', hidden: !rule, onclick: remove }, 'Delete rule');

    form.append(title, general,
      name.wrap,
      match.wrap,
      h('fieldset', { class: 'steps-fieldset' },
        h('legend', {}, 'Steps'),
        h('p', { class: 'hint' }, 'Tried in order: each step\'s target picks the eligible agents; when its timeout passes without an agent, the next step widens the search. Targets read agent.* (bare names): id, branch, teams, team == "name", skill("name") and lang("code") (0–5), and conv.*.'),
        stepsHost, stepsError, addStepButton),
      h('div', { class: 'row' }, mode.wrap, offerTimeout.wrap),
      h('details', { class: 'syntax-help' }, h('summary', {}, 'Expression syntax'),
        h('ul', {},
          h('li', {}, 'Comparisons: == != < <= > >=, x in ["a", "b"], x not in [...], list has x, text contains "word", x is null, x is not null'),
          h('li', {}, 'Combine with and, or, not, and parentheses. Strings in "double" or \'single\' quotes.'),
          h('li', {}, 'Examples: conv.channel == "sms" and contact.vip · skill("billing") >= 3 and team == "payments" · lang("es") >= 2'))),
      h('div', { class: 'actions form-actions' }, saveButton, cancelButton, deleteButton),
      saved);

    (rule ? rule.steps : [{ target: 'true', priority: 0, timeout_secs: null }]).forEach(addStep);
    renumber();

    function addStep(s) {
      const step = { };
      step.expr = exprField({ field: 'steps[0].target', label: 'Target', rows: 2, value: s.target || '', placeholder: 'skill("billing") >= 3', onInput: () => touched(step.expr.textarea.dataset.field) });
      step.priority = field('Priority', input({ type: 'number', min: 0, max: 100, step: 1, inputmode: 'numeric', value: String(s.priority ?? 0) }), { name: 'steps[0].priority', hint: '0–100' });
      step.timeout = field('Timeout (seconds)', input({ type: 'number', min: 0, step: 1, inputmode: 'numeric', value: s.timeout_secs === null || s.timeout_secs === undefined ? '' : String(s.timeout_secs) }), { name: 'steps[0].timeout_secs', hint: 'Before the next step; empty on the last step: no timeout.' });
      for (const f of [step.priority, step.timeout]) f.input.addEventListener('input', () => touched(f.input.name));
      step.heading = h('h3', { class: 'step-title' });
      step.remove = h('button', { type: 'button', class: 'btn-small', onclick: () => { steps.splice(steps.indexOf(step), 1); step.el.remove(); renumber(); touched('steps'); addStepButton.focus(); } }, 'Remove step');
      step.up = h('button', { type: 'button', class: 'btn-small', onclick: () => moveStep(step, -1) }, '↑');
      step.down = h('button', { type: 'button', class: 'btn-small', onclick: () => moveStep(step, 1) }, '↓');
      step.el = h('li', { class: 'step' },
        h('div', { class: 'step-head' }, step.heading, h('div', { class: 'actions' }, step.up, step.down, step.remove)),
        step.expr.wrap,
        h('div', { class: 'row' }, step.priority.wrap, step.timeout.wrap));
      steps.push(step);
      stepsHost.appendChild(step.el);
    }

    function moveStep(step, delta) {
      const i = steps.indexOf(step);
      const j = i + delta;
      if (j < 0 || j >= steps.length) return;
      [steps[i], steps[j]] = [steps[j], steps[i]];
      clear(stepsHost);
      steps.forEach((s) => stepsHost.appendChild(s.el));
      renumber();
      touched('steps');
      (delta < 0 ? step.up : step.down).focus();
    }

    function renumber() {
      steps.forEach((s, i) => {
        const f = (n) => `steps[${i}].${n}`;
        s.heading.textContent = `Step ${i + 1}`;
        s.expr.textarea.dataset.field = f('target');
        s.expr.textarea.name = f('target');
        s.expr.errorEl.dataset.errorFor = f('target');
        s.priority.input.name = f('priority');
        s.priority.error.dataset.errorFor = f('priority');
        s.timeout.input.name = f('timeout_secs');
        s.timeout.error.dataset.errorFor = f('timeout_secs');
        s.remove.disabled = steps.length === 1;
        s.up.disabled = i === 0;
        s.down.disabled = i === steps.length - 1;
        s.up.setAttribute('aria-label', `Move step ${i + 1} up`);
        s.down.setAttribute('aria-label', `Move step ${i + 1} down`);
        s.remove.setAttribute('aria-label', `Remove step ${i + 1}`);
      });
      if (state.touched.size) schedule();
    }

    function touched(f) {
      state.touched.add(f);
      saved.textContent = '';
      schedule();
    }

    function schedule() {
      clearTimeout(state.timer);
      state.timer = setTimeout(() => { validate().catch(() => {}); }, VALIDATE_DELAY);
    }

    const int = (v) => (/^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN);

    /** Client-side checks of the number fields and the name; problems in the API's shape. */
    function localProblems(all) {
      const out = [];
      if (all || state.touched.has('name')) {
        const n = name.input.value.trim();
        if (!n) out.push({ field: 'name', message: 'Give the rule a name.' });
        else if ([...n].length > MAX_NAME) out.push({ field: 'name', message: `At most ${MAX_NAME} characters.` });
      }
      steps.forEach((s, i) => {
        const p = int(s.priority.input.value);
        if (!(p >= 0 && p <= 100)) out.push({ field: `steps[${i}].priority`, message: 'A whole number from 0 to 100.' });
        const raw = s.timeout.input.value.trim();
        if (raw === '') {
          if (i !== steps.length - 1) out.push({ field: `steps[${i}].timeout_secs`, message: 'Required on every step but the last (empty there: no timeout).' });
        } else {
          const t = int(raw);
          if (!(t >= 0 && t <= 604800)) out.push({ field: `steps[${i}].timeout_secs`, message: 'A whole number of seconds from 0 to 604800.' });
        }
      });
      if (!steps.length) out.push({ field: 'steps', message: 'At least one step is required.' });
      if (mode.input.value === 'offer') {
        const t = int(offerTimeout.input.value);
        if (!(t >= 1 && t <= 3600)) out.push({ field: 'offer_timeout_secs', message: 'A whole number of seconds from 1 to 3600.' });
      }
      return out;
    }

    function body() {
      return {
        match: match.value(),
        steps: steps.map((s, i) => {
          const p = int(s.priority.input.value);
          const raw = s.timeout.input.value.trim();
          const t = int(raw);
          return {
            target: s.expr.value(),
            priority: Number.isFinite(p) ? p : 0,
            timeout_secs: raw === '' || !Number.isFinite(t) ? (i === steps.length - 1 ? null : 0) : t,
          };
        }),
      };
    }

    /** Shows problems by field; `all` shows untouched fields' problems too (on save). */
    function show(problems, all) {
      const by = new Map();
      const unplaced = [];
      for (const p of problems) {
        if (!p || !p.field) continue;
        if (!all && !visible(p.field)) continue;
        (by.get(p.field) || by.set(p.field, []).get(p.field)).push(p);
      }
      match.setProblems(by.get('match') || []);
      steps.forEach((s, i) => {
        s.expr.setProblems(by.get(`steps[${i}].target`) || []);
        setSimple(s.priority, by.get(`steps[${i}].priority`));
        setSimple(s.timeout, by.get(`steps[${i}].timeout_secs`));
      });
      setSimple(name, by.get('name'));
      setSimple(offerTimeout, by.get('offer_timeout_secs'));
      setSimple(mode, by.get('mode'));
      stepsError.textContent = (by.get('steps') || []).map((p) => p.message).join('\n');
      const known = new Set(['match', 'name', 'offer_timeout_secs', 'mode', 'steps']);
      steps.forEach((_, i) => ['target', 'priority', 'timeout_secs'].forEach((n) => known.add(`steps[${i}].${n}`)));
      for (const [f, list] of by) if (!known.has(f)) unplaced.push(...list.map((p) => `${f}: ${p.message}`));
      general.textContent = unplaced.join('\n');
    }

    /** Whether a field's problems show before a save: touched, or holding text. */
    function visible(f) {
      if (state.touched.has(f) || (f.startsWith('steps') && state.touched.has('steps'))) return true;
      const ctl = [...form.querySelectorAll('[name]')].find((c) => c.name === f);
      return !!(ctl && ctl.value.trim());
    }

    function setSimple(f, list) {
      f.error.textContent = (list || []).map((p) => (p.line && p.column ? `${p.line}:${p.column}: ${p.message}` : p.message)).join('\n');
      if (list && list.length) f.input.setAttribute('aria-invalid', 'true');
      else f.input.removeAttribute('aria-invalid');
    }

    /** Validates with the hub (debounced from typing; awaited before saving). */
    async function validate(all = false) {
      const my = ++state.seq;
      const local = localProblems(all);
      let remote = [];
      try {
        const res = await api('POST', '/v1/admin/routing-rules/validate', body());
        remote = res.errors || [];
      } catch (err) {
        if (my !== state.seq) return null;
        general.textContent = `Could not check the rule: ${humanError(err)}`;
        return null;
      }
      if (my !== state.seq || destroyed) return null;
      // The client's own reading of a number field wins over the hub's (it saw a 0 for it).
      const localFields = new Set(local.map((p) => p.field));
      const problems = [...local, ...remote.filter((p) => !localFields.has(p.field))];
      state.lastProblems = problems;
      show(problems, all);
      return problems;
    }

    async function save(e) {
      if (e) e.preventDefault();
      clearTimeout(state.timer);
      saved.textContent = '';
      await busy(saveButton, async () => {
        const problems = await validate(true);
        if (problems === null) return;
        if (problems.length) {
          status.textContent = `The rule has ${problems.length} problem${problems.length === 1 ? '' : 's'}; nothing was saved.`;
          const first = form.querySelector('[aria-invalid="true"]');
          if (first) first.focus();
          return;
        }
        const payload = { name: name.input.value.trim(), ...body(), mode: mode.input.value };
        if (mode.input.value === 'offer') payload.offer_timeout_secs = int(offerTimeout.input.value);
        try {
          const out = state.id
            ? await api('PATCH', `/v1/admin/routing-rules/${encodeURIComponent(state.id)}`, payload)
            : await api('POST', '/v1/admin/routing-rules', payload, { idempotencyKey: crypto.randomUUID() });
          state.id = out.id;
          title.textContent = `Edit rule: ${out.name}`;
          saveButton.textContent = 'Save rule';
          deleteButton.hidden = false;
          saved.textContent = `Saved "${out.name}" (rule ${out.position}).`;
          toast(`Rule "${out.name}" saved`);
          await loadRules();
        } catch (err) {
          const details = (err.details || []).filter((d) => d && d.field);
          if (details.length) { show(details, true); general.textContent = general.textContent || humanError(err); } else general.textContent = humanError(err);
          const first = form.querySelector('[aria-invalid="true"]');
          if (first) first.focus();
        }
      });
    }

    async function remove() {
      if (!state.id) return;
      if (!await confirmDialog(`Delete the rule "${name.input.value}"? Conversations it would route fall through to the next rule.`, { okLabel: 'Delete', danger: true })) return;
      try {
        await api('DELETE', `/v1/admin/routing-rules/${encodeURIComponent(state.id)}`);
        toast('Rule deleted');
        await loadRules();
        closeEditor();
      } catch (err) {
        general.textContent = humanError(err);
      }
    }

    form.addEventListener('submit', save);
    if (rule) setTimeout(() => { validate().catch(() => {}); }, 0);
    return {
      el: form,
      get id() { return state.id; },
      save,
      focus: () => name.input.focus(),
      dispose: () => { clearTimeout(state.timer); state.seq++; },
    };
  }

  // --- simulate -------------------------------------------------------------------------

  function simulatePanel() {
    const form = h('form', { class: 'card simulate', novalidate: true, 'aria-labelledby': 'simulate-title' });
    const general = formError();
    const channel = field('Channel', select(Object.entries(CHANNEL_LABEL)), { name: 'conversation.channel' });
    const inbox = field('Inbox', select([]), { name: 'conversation.inbox' });
    const language = field('Language (optional)', input({ placeholder: 'es, pt-br', autocomplete: 'off', maxlength: 16 }), { name: 'conversation.language' });
    const labels = field('Labels (optional, comma-separated)', input({ placeholder: 'billing, urgent', autocomplete: 'off' }), { name: 'conversation.labels' });
    const priority = field('Priority', input({ type: 'number', min: 0, max: 100, step: 1, value: '0' }), { name: 'conversation.priority' });
    const first = field('First message', h('textarea', { rows: 2, placeholder: 'Hi, I need a refund' }), { name: 'conversation.first_message' });
    const vip = field('Contact is VIP', select([['', 'not set'], ['true', 'yes'], ['false', 'no']]), { name: 'conversation.contact.vip' });
    const tier = field('Contact tier', input({ placeholder: 'gold', autocomplete: 'off' }), { name: 'conversation.contact.tier' });
    const run = h('button', { type: 'submit', id: 'simulate', class: 'primary' }, 'Simulate');
    const result = h('div', { id: 'simulate-result', class: 'simulate-result', 'aria-live': 'polite' });

    const syncInboxes = () => {
      const ch = channel.input.value;
      const active = inboxes.filter((i) => i.active);
      const mine = active.filter((i) => i.channel === ch);
      const opts = (mine.length ? mine : active).map((i) => [i.slug, `${i.name} (${i.slug})`]);
      setOptions(inbox.input, opts.length ? opts : [['test', 'test (no inboxes yet)']]);
    };
    channel.input.addEventListener('change', syncInboxes);

    form.append(h('h2', { id: 'simulate-title' }, 'Simulate'),
      h('p', { class: 'hint' }, 'Which saved rule a conversation would take, and which agent the engine would pick now. A dry run: nothing is assigned.'),
      general,
      h('div', { class: 'row' }, channel.wrap, inbox.wrap),
      h('div', { class: 'row' }, language.wrap, priority.wrap),
      labels.wrap, first.wrap,
      h('div', { class: 'row' }, vip.wrap, tier.wrap),
      h('div', { class: 'actions' }, run),
      result);

    async function simulate(e) {
      if (e) e.preventDefault();
      for (const f of [channel, inbox, language, labels, priority, first, vip, tier]) { f.error.textContent = ''; f.input.removeAttribute('aria-invalid'); }
      general.textContent = '';
      const p = Number(priority.input.value || 0);
      if (!Number.isInteger(p) || p < 0 || p > 100) {
        priority.error.textContent = 'A whole number from 0 to 100.';
        priority.input.setAttribute('aria-invalid', 'true');
        priority.input.focus();
        return;
      }
      if (!inbox.input.value) {
        inbox.error.textContent = 'Choose an inbox (create one under Channels first).';
        inbox.input.setAttribute('aria-invalid', 'true');
        return;
      }
      const contact = {};
      if (vip.input.value) contact.vip = vip.input.value === 'true';
      if (tier.input.value.trim()) contact.tier = tier.input.value.trim();
      const conversation = {
        channel: channel.input.value,
        inbox: inbox.input.value,
        labels: labels.input.value.split(',').map((s) => s.trim()).filter(Boolean),
        priority: p,
        contact,
      };
      if (language.input.value.trim()) conversation.language = language.input.value.trim();
      if (first.input.value.trim()) conversation.first_message = first.input.value;
      await busy(run, async () => {
        try {
          const out = await api('POST', '/v1/admin/routing-rules/simulate', { conversation });
          renderResult(result, out);
        } catch (err) {
          const placed = (err.details || []).some((d) => {
            const f = [channel, inbox, language, labels, priority, first, vip, tier].find((x) => x.input.name === d.field);
            if (f) { f.error.textContent = d.message; f.input.setAttribute('aria-invalid', 'true'); }
            return !!f;
          });
          if (!placed) general.textContent = humanError(err);
          clear(result);
        }
      });
    }
    form.addEventListener('submit', simulate);
    return { el: form, syncInboxes, simulate };
  }

  function agentName(id, withId = false) {
    if (!id) return '—';
    const n = agentNames.get(id);
    return n ? (withId ? `${n} (${id})` : n) : id;
  }

  function renderResult(el, out) {
    clear(el);
    const d = out.decision || {};
    const mode = typeof d.mode === 'string' ? d.mode : (d.mode && d.mode.mode) || 'auto';
    const offerMs = d.mode && d.mode.timeout_ms;
    const ruleName = out.rule ? `"${out.rule.name}"` : 'the default rule';
    const stepNo = (d.step ?? 0) + 1;
    let decision;
    if (d.chosen) {
      decision = mode === 'offer'
        ? `Offer to ${agentName(d.chosen)} for ${Math.round((offerMs || 0) / 1000)} s — rule ${ruleName}, step ${stepNo}.`
        : `Assign to ${agentName(d.chosen)} — rule ${ruleName}, step ${stepNo}.`;
    } else {
      decision = `No agent available now: the conversation waits in the queue — rule ${ruleName}, step ${stepNo}.`;
    }
    el.appendChild(h('p', { class: ['decision', d.chosen ? 'ok' : 'waits'] }, h('strong', {}, 'Decision: '), decision));

    const c = d.counts || {};
    const trace = h('ol', { class: 'trace' });
    const item = (label, ...rest) => trace.appendChild(h('li', {}, h('strong', {}, `${label}: `), ...rest));
    item('Rule', out.rule
      ? `${out.rule.name} (${out.rule.id}) — the first rule whose match condition holds`
      : 'no rule matched — the default rule: the inbox\'s team, or any agent');
    if (d.target !== undefined) item(`Step ${stepNo}`, h('code', {}, d.target || 'true'), ` · tier ${d.tier ?? 0}${d.urgent ? ' · urgent' : ''} · waited ${fmtDuration(d.waited_ms || 0)}`);
    if (d.counts) {
      const stages = [['agents', 'in the account'], ['indexed', 'after the skills/teams/languages lookup'], ['target', 'after the full target'], ['not_excluded', 'not excluded'], ['online', 'online'], ['with_capacity', 'with a free slot']];
      item('Candidate agents', h('span', { class: 'funnel' }, stages.map(([k, label], i) => [i ? ' → ' : '', h('span', { class: 'stage' }, `${c[k] ?? 0} ${label}`)])));
    }
    if (Array.isArray(d.top) && d.top.length) {
      item('Ranked (best first)', h('ol', { class: 'ranked' }, d.top.map((s) => h('li', {},
        h('strong', {}, agentName(s.agent_id)),
        ` — affinity ${s.affinity ? 'yes' : 'no'} · skill fit ${s.skill_fit} · ${s.free}/${s.capacity} slots free (${Math.round((s.spare_ratio || 0) * 100)}%) · last assigned ${s.last_assigned_at_ms ? fmtTime(s.last_assigned_at_ms) : 'never'}`))));
    }
    if (d.decided_by) item('Decided by', d.decided_by.replace(/_/g, ' '));
    item('Chosen', d.chosen ? agentName(d.chosen, true) : 'nobody');
    el.appendChild(h('h3', {}, 'Trace'));
    el.appendChild(trace);

    if (out.steps && out.steps.length) {
      el.appendChild(h('h3', {}, 'Steps of the rule, eligible now'));
      el.appendChild(h('ol', { class: 'sim-steps' }, out.steps.map((s) => h('li', {},
        h('code', {}, s.target), ` · priority ${s.priority} · ${s.timeout_secs === null || s.timeout_secs === undefined ? 'no timeout' : `then after ${s.timeout_secs}s the next step`}`,
        h('div', {}, h('strong', {}, `Eligible now (${s.eligible_count}): `), s.eligible_count ? s.eligible.map((a) => a.name || a.user_id).join(', ') : 'nobody')))));
    }
    el.scrollIntoView({ block: 'nearest' });
  }

  // --- skills ---------------------------------------------------------------------------

  async function renderSkills() {
    const skills = await fetchAll('/v1/admin/skills');
    clear(skillsHost);
    const form = h('form', { class: 'inline-form', novalidate: true });
    const nameF = field('New skill', input({ autocomplete: 'off', maxlength: 64, placeholder: 'billing' }), { name: 'name', hint: 'Lowercase letters, digits, - and _.' });
    const add = h('button', { type: 'submit', class: 'primary' }, 'Add skill');
    form.append(nameF.wrap, h('div', { class: 'actions' }, add));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      nameF.error.textContent = '';
      nameF.input.removeAttribute('aria-invalid');
      const v = nameF.input.value.trim();
      if (!/^[a-z0-9_-]{1,64}$/.test(v)) {
        nameF.error.textContent = 'Use 1 to 64 lowercase letters, digits, - and _.';
        nameF.input.setAttribute('aria-invalid', 'true');
        nameF.input.focus();
        return;
      }
      await busy(add, async () => {
        try {
          await api('POST', '/v1/admin/skills', { name: v });
          toast(`Skill ${v} added`);
          await renderSkills();
          skillsHost.querySelector('input').focus();
        } catch (err) {
          nameF.error.textContent = err.field && err.field('name') ? err.field('name') : humanError(err);
          nameF.input.setAttribute('aria-invalid', 'true');
        }
      });
    });
    skillsHost.appendChild(card('Skills',
      h('p', { class: 'hint' }, 'The skill catalogue that rules (skill("name")) and agents\' routing profiles use.'),
      table([
        { label: 'Skill', cell: (s) => h('code', {}, s.name) },
        { label: 'Agents', cell: (s) => String(s.agents) },
        { label: 'Added', cell: (s) => fmtTime(s.created_at_ms) },
        { label: 'Actions', cell: (s) => h('button', { type: 'button', class: 'btn-small', 'aria-label': `Delete skill ${s.name}`, onclick: async () => {
          if (!await confirmDialog(`Delete the skill ${s.name}?`, { okLabel: 'Delete', danger: true })) return;
          try { await api('DELETE', `/v1/admin/skills/${encodeURIComponent(s.name)}`); toast('Skill deleted'); await renderSkills(); } catch (err) { toast(humanError(err), 'error'); }
        } }, 'Delete') },
      ], skills, { caption: 'Skills', empty: 'No skills yet.' }),
      form));
  }

  // --- load -----------------------------------------------------------------------------

  const sim = simulatePanel();
  simHost.appendChild(sim.el);
  const shortcuts = {
    n: () => openEditor(null),
    ctrlEnter: () => { if (editor) editor.save(); },
    ctrlShiftEnter: () => sim.simulate(),
  };
  if (ctx.shortcuts) Object.assign(ctx.shortcuts, shortcuts);

  await Promise.all([
    loadRules().catch((err) => { clear(listHost); listHost.appendChild(h('p', { class: 'form-error', role: 'alert' }, humanError(err))); }),
    fetchAll('/v1/admin/inboxes').then((list) => { inboxes = list; sim.syncInboxes(); }).catch(() => sim.syncInboxes()),
    fetchAll('/v1/admin/agents').then((list) => { agentNames = new Map(list.map((a) => [a.user_id, a.name])); }).catch(() => {}),
    renderSkills().catch((err) => { skillsHost.appendChild(h('p', { class: 'form-error' }, humanError(err))); }),
  ]);

  return {
    cleanup() { destroyed = true; if (editor) editor.dispose(); },
    shortcuts,
  };
}
