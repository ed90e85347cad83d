// People: users, teams, branches and roles (with the custom-role matrix editor).
import { api, humanError } from '/ui/shared/api.js';
import { h, clear, toast, fetchAll, sectionHead, card, table, fmtTime, badge, confirmDialog, select, nextId, formError, busy, clearErrors, showApiError } from '../util.js';
import { form, showForm, isEmail, passwordProblem } from '../forms.js';

const PERMISSIONS = [
  ['view_conversations', 'View conversations', ['all', 'branch', 'team', 'assigned']],
  ['reply_to_customer', 'Reply to customers', ['all', 'branch', 'team', 'assigned']],
  ['reassign_conversations', 'Reassign conversations', ['all', 'branch', 'team', 'assigned']],
  ['configure_routing', 'Configure routing, inboxes, alerts', ['all']],
  ['manage_users', 'Manage users, teams, roles, API keys', ['all']],
  ['view_sla_reports', 'View SLA reports', ['all', 'branch', 'team', 'self']],
  ['export_raw_data', 'Export raw data, erase contacts', ['all']],
  ['view_audit_log', 'View the audit log', ['all']],
];

export async function render(host) {
  let users = [];
  let teams = [];
  let branches = [];
  let roles = [];

  const formHost = h('div', { class: 'form-host' });
  const usersHost = h('div');
  const teamsHost = h('div');
  const branchesHost = h('div');
  const rolesHost = h('div');
  const newUser = h('button', { type: 'button', class: 'primary', id: 'new-user', onclick: () => userForm(null) }, 'New user');
  const jump = (label, target) => h('button', { type: 'button', class: 'btn-link', onclick: () => { target.scrollIntoView(); const t = target.querySelector('h2'); if (t) { t.tabIndex = -1; t.focus(); } } }, label);

  host.append(
    sectionHead('People', newUser),
    h('nav', { class: 'subnav', 'aria-label': 'People sections' }, jump('Users', usersHost), jump('Teams', teamsHost), jump('Branches', branchesHost), jump('Roles', rolesHost)),
    formHost, usersHost, teamsHost, branchesHost, rolesHost);

  const roleOptions = () => roles.map((r) => [r.id, r.builtin ? r.name : `${r.name} (custom)`]);
  const teamName = (id) => (teams.find((t) => t.id === id) || {}).name || id;
  const branchName = (id) => (id ? (branches.find((b) => b.id === id) || {}).name || id : '—');
  const roleName = (id) => (roles.find((r) => r.id === id) || {}).name || id;
  const branchOptions = () => [['', '— none —'], ...branches.filter((b) => b.active).map((b) => [b.id, b.name])];
  const teamOptions = () => teams.filter((t) => t.active).map((t) => [t.id, t.name]);

  async function reload() {
    [users, teams, branches, roles] = await Promise.all([
      fetchAll('/v1/admin/users'),
      fetchAll('/v1/admin/teams'),
      fetchAll('/v1/admin/branches'),
      api('GET', '/v1/admin/roles').then((p) => p.data || []),
    ]);
    renderUsers();
    renderTeams();
    renderBranches();
    renderRoles();
  }

  const done = (msg) => async () => { toast(msg); clear(formHost); await reload(); };

  // --- users ------------------------------------------------------------------------------

  function renderUsers() {
    clear(usersHost);
    usersHost.appendChild(card('Users', table([
      { label: 'Name', cell: (u) => h('strong', {}, u.name) },
      { label: 'Email', cell: (u) => u.email },
      { label: 'Role', cell: (u) => roleName(u.role) },
      { label: 'Teams', cell: (u) => u.team_ids.map(teamName).join(', ') || '—' },
      { label: 'Branch', cell: (u) => branchName(u.branch_id) },
      { label: 'Status', cell: (u) => [u.active ? badge('active', 'ok') : badge('deactivated', 'muted'), u.totp_enabled ? [' ', badge('2FA')] : null, u.locked_until && u.locked_until > Date.now() ? [' ', badge('locked', 'warn')] : null] },
      { label: 'Last sign-in', cell: (u) => fmtTime(u.last_login_at) },
      { label: 'Actions', cell: (u) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn-small', onclick: () => userForm(u), 'aria-label': `Edit ${u.name}` }, 'Edit'),
        h('button', { type: 'button', class: 'btn-small', onclick: () => passwordForm(u), 'aria-label': `Reset the password of ${u.name}` }, 'Reset password'),
        u.totp_enabled ? h('button', { type: 'button', class: 'btn-small', onclick: () => removeFactor(u), 'aria-label': `Remove the second factor of ${u.name}` }, 'Remove 2FA') : null) },
    ], users, { caption: 'Users', empty: 'No users yet.' })));
  }

  function userForm(u) {
    const f = form({
      title: u ? `Edit ${u.name}` : 'New user',
      id: u ? 'edit-user-form' : 'new-user-form',
      submitLabel: u ? 'Save user' : 'Create user',
      onCancel: () => clear(formHost),
      fields: [
        u ? null : { name: 'email', label: 'Email', type: 'email', required: true, attrs: { autocomplete: 'off', id: 'user-email' }, check: (v) => (isEmail(v) ? undefined : 'An email address like name@example.com.') },
        { name: 'name', label: 'Name', value: u ? u.name : '', required: true, attrs: { maxlength: 100, autocomplete: 'off', id: u ? 'edit-user-name' : 'user-name' } },
        u ? null : { name: 'password', label: 'Initial password', type: 'password', required: true, attrs: { autocomplete: 'new-password', id: 'user-password' }, hint: 'At least 12 characters mixing three of lowercase, uppercase, digits, symbols. Share it with the user safely.', check: (v, all) => passwordProblem(v, all.email) },
        { name: 'role', label: 'Role', type: 'select', options: roleOptions(), value: u ? u.role : 'agent', required: true, attrs: { id: u ? 'edit-user-role' : 'user-role' } },
        { name: 'branch_id', label: 'Branch', type: 'select', options: branchOptions(), value: u ? u.branch_id || '' : '' },
        { name: 'team_ids', label: 'Teams', type: 'checkboxes', options: teamOptions(), value: u ? u.team_ids : [], emptyText: 'No teams yet: create one below.' },
        u ? { name: 'active', label: 'Active (unticking signs the user out everywhere)', type: 'checkbox', value: u.active } : null,
      ].filter(Boolean),
      onSubmit: async (v) => {
        if (u) {
          const body = {};
          if (v.name.trim() !== u.name) body.name = v.name.trim();
          if (v.role !== u.role) body.role = v.role;
          if ((v.branch_id || null) !== (u.branch_id || null)) body.branch_id = v.branch_id || null;
          if (v.team_ids.slice().sort().join() !== u.team_ids.slice().sort().join()) body.team_ids = v.team_ids;
          if (v.active !== u.active) body.active = v.active;
          if (!Object.keys(body).length) { clear(formHost); return; }
          await api('PATCH', `/v1/admin/users/${encodeURIComponent(u.id)}`, body);
          await done(`Saved ${v.name}`)();
        } else {
          const body = { email: v.email.trim(), name: v.name.trim(), password: v.password, role: v.role, team_ids: v.team_ids };
          if (v.branch_id) body.branch_id = v.branch_id;
          await api('POST', '/v1/admin/users', body, { idempotencyKey: crypto.randomUUID() });
          await done(`User ${body.name} created`)();
        }
      },
    });
    showForm(formHost, f);
  }

  function passwordForm(u) {
    showForm(formHost, form({
      title: `Reset the password of ${u.name}`,
      submitLabel: 'Set password',
      intro: h('p', { class: 'hint' }, 'Their sessions end at once; they sign in with the new password.'),
      onCancel: () => clear(formHost),
      fields: [{ name: 'password', label: 'New password', type: 'password', required: true, attrs: { autocomplete: 'new-password' }, check: (v) => passwordProblem(v, u.email) }],
      onSubmit: async (v) => {
        await api('POST', `/v1/admin/users/${encodeURIComponent(u.id)}/password`, { password: v.password });
        await done(`Password of ${u.name} reset`)();
      },
    }));
  }

  async function removeFactor(u) {
    if (!await confirmDialog(`Remove the second factor of ${u.name}? Their sessions end, and they can sign in with the password alone until they enrol again.`, { okLabel: 'Remove 2FA', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/users/${encodeURIComponent(u.id)}/second-factor`);
      await done('Second factor removed')();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  // --- teams ------------------------------------------------------------------------------

  function renderTeams() {
    clear(teamsHost);
    const members = (t) => users.filter((u) => u.team_ids.includes(t.id));
    const create = h('button', { type: 'button', class: 'btn-small', id: 'new-team', onclick: () => teamForm(null) }, 'New team');
    teamsHost.appendChild(card('Teams', h('div', { class: 'actions' }, create), table([
      { label: 'Team', cell: (t) => h('strong', {}, t.name) },
      { label: 'Branch', cell: (t) => branchName(t.branch_id) },
      { label: 'Members', cell: (t) => members(t).map((u) => u.name).join(', ') || '—' },
      { label: 'Status', cell: (t) => (t.active ? badge('active', 'ok') : badge('inactive', 'muted')) },
      { label: 'Actions', cell: (t) => h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn-small', onclick: () => teamForm(t), 'aria-label': `Rename or move team ${t.name}` }, 'Edit'),
        h('button', { type: 'button', class: 'btn-small', onclick: () => membersForm(t, members(t)), 'aria-label': `Members of team ${t.name}` }, 'Members')) },
    ], teams, { caption: 'Teams', empty: 'No teams yet.' })));
  }

  function teamForm(t) {
    showForm(formHost, form({
      title: t ? `Edit team ${t.name}` : 'New team',
      id: t ? 'edit-team-form' : 'new-team-form',
      submitLabel: t ? 'Save team' : 'Create team',
      onCancel: () => clear(formHost),
      fields: [
        { name: 'name', label: 'Team name', value: t ? t.name : '', required: true, attrs: { maxlength: 100, autocomplete: 'off', id: t ? 'edit-team-name' : 'team-name' } },
        { name: 'branch_id', label: 'Branch', type: 'select', options: branchOptions(), value: t ? t.branch_id || '' : '' },
        t ? { name: 'active', label: 'Active', type: 'checkbox', value: t.active } : null,
      ].filter(Boolean),
      onSubmit: async (v) => {
        if (t) {
          const body = {};
          if (v.name.trim() !== t.name) body.name = v.name.trim();
          if ((v.branch_id || null) !== (t.branch_id || null)) body.branch_id = v.branch_id || null;
          if (v.active !== t.active) body.active = v.active;
          if (Object.keys(body).length) await api('PATCH', `/v1/admin/teams/${encodeURIComponent(t.id)}`, body);
          await done(`Team ${v.name} saved`)();
        } else {
          const body = { name: v.name.trim() };
          if (v.branch_id) body.branch_id = v.branch_id;
          await api('POST', '/v1/admin/teams', body, { idempotencyKey: crypto.randomUUID() });
          await done(`Team ${body.name} created`)();
        }
      },
    }));
  }

  function membersForm(t, current) {
    showForm(formHost, form({
      title: `Members of ${t.name}`,
      submitLabel: 'Save members',
      onCancel: () => clear(formHost),
      fields: [{ name: 'user_ids', label: 'Members', type: 'checkboxes', options: users.filter((u) => u.active).map((u) => [u.id, `${u.name} (${u.email})`]), value: current.map((u) => u.id) }],
      onSubmit: async (v) => {
        await api('PUT', `/v1/admin/teams/${encodeURIComponent(t.id)}/members`, { user_ids: v.user_ids });
        await done(`Members of ${t.name} saved`)();
      },
    }));
  }

  // --- branches ---------------------------------------------------------------------------

  function renderBranches() {
    clear(branchesHost);
    const create = h('button', { type: 'button', class: 'btn-small', id: 'new-branch', onclick: () => branchForm(null) }, 'New branch');
    branchesHost.appendChild(card('Branches', h('div', { class: 'actions' }, create), table([
      { label: 'Branch', cell: (b) => h('strong', {}, b.name) },
      { label: 'Teams', cell: (b) => teams.filter((t) => t.branch_id === b.id).map((t) => t.name).join(', ') || '—' },
      { label: 'People', cell: (b) => String(users.filter((u) => u.branch_id === b.id).length) },
      { label: 'Status', cell: (b) => (b.active ? badge('active', 'ok') : badge('inactive', 'muted')) },
      { label: 'Actions', cell: (b) => h('button', { type: 'button', class: 'btn-small', onclick: () => branchForm(b), 'aria-label': `Edit branch ${b.name}` }, 'Edit') },
    ], branches, { caption: 'Branches', empty: 'No branches yet.' })));
  }

  function branchForm(b) {
    showForm(formHost, form({
      title: b ? `Edit branch ${b.name}` : 'New branch',
      submitLabel: b ? 'Save branch' : 'Create branch',
      onCancel: () => clear(formHost),
      fields: [
        { name: 'name', label: 'Branch name', value: b ? b.name : '', required: true, attrs: { maxlength: 100, autocomplete: 'off', id: b ? 'edit-branch-name' : 'branch-name' } },
        b ? { name: 'active', label: 'Active', type: 'checkbox', value: b.active } : null,
      ].filter(Boolean),
      onSubmit: async (v) => {
        if (b) {
          const body = {};
          if (v.name.trim() !== b.name) body.name = v.name.trim();
          if (v.active !== b.active) body.active = v.active;
          if (Object.keys(body).length) await api('PATCH', `/v1/admin/branches/${encodeURIComponent(b.id)}`, body);
          await done(`Branch ${v.name} saved`)();
        } else {
          await api('POST', '/v1/admin/branches', { name: v.name.trim() }, { idempotencyKey: crypto.randomUUID() });
          await done(`Branch ${v.name.trim()} created`)();
        }
      },
    }));
  }

  // --- roles ------------------------------------------------------------------------------

  function grantsSummary(g) {
    const entries = Object.entries(g || {});
    if (!entries.length) return '—';
    return h('ul', { class: 'grants' }, entries.map(([p, s]) => h('li', {}, h('code', {}, p), ` · ${s}`)));
  }

  function renderRoles() {
    clear(rolesHost);
    const create = h('button', { type: 'button', class: 'btn-small', id: 'new-role', onclick: () => roleEditor(null) }, 'New custom role');
    rolesHost.appendChild(card('Roles', h('div', { class: 'actions' }, create), table([
      { label: 'Role', cell: (r) => [h('strong', {}, r.name), r.builtin ? [' ', badge('built-in', 'muted')] : null] },
      { label: 'Description', cell: (r) => r.description || '—' },
      { label: 'Grants', cell: (r) => grantsSummary(r.grants) },
      { label: 'Users', cell: (r) => String(users.filter((u) => u.role === r.id).length) },
      { label: 'Actions', cell: (r) => (r.builtin
        ? h('button', { type: 'button', class: 'btn-small', onclick: () => roleEditor(r, true), 'aria-label': `View role ${r.name}` }, 'View')
        : h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'btn-small', onclick: () => roleEditor(r), 'aria-label': `Edit role ${r.name}` }, 'Edit'),
          h('button', { type: 'button', class: 'btn-small danger', onclick: () => deleteRole(r), 'aria-label': `Delete role ${r.name}` }, 'Delete'))) },
    ], roles, { caption: 'Roles' })));
  }

  /** The permission × scope matrix: a row per permission, a scope select per row. */
  function roleEditor(r, readOnly = false) {
    const el = h('form', { class: 'card form role-editor', novalidate: true, id: 'role-form' });
    const general = formError();
    const nameId = nextId('role');
    const descId = nextId('role');
    const nameInput = h('input', { id: nameId, type: 'text', name: 'name', maxlength: 100, value: r ? r.name : '', readOnly, autocomplete: 'off', 'aria-describedby': `${nameId}-err` });
    const descInput = h('input', { id: descId, type: 'text', name: 'description', maxlength: 500, value: r && !r.builtin ? r.description || '' : (r ? r.description : ''), readOnly, autocomplete: 'off', 'aria-describedby': `${descId}-err` });
    const selects = {};
    const rows = PERMISSIONS.map(([perm, label, scopes]) => {
      const id = nextId('grant');
      const s = select([['', '— not granted —'], ...scopes.map((x) => [x, x])], { id, name: `grants.${perm}`, disabled: readOnly, 'data-permission': perm, 'aria-describedby': `${id}-err` });
      s.value = (r && r.grants && r.grants[perm]) || '';
      selects[perm] = s;
      return h('tr', {},
        h('th', { scope: 'row' }, h('label', { for: id }, label), h('div', {}, h('code', { class: 'muted' }, perm))),
        h('td', {}, s, h('div', { class: 'field-error', id: `${id}-err`, 'data-error-for': `grants.${perm}`, 'aria-live': 'polite' })));
    });
    const submit = h('button', { type: 'submit', class: 'primary', hidden: readOnly }, r ? 'Save role' : 'Create role');
    el.append(
      h('h2', {}, readOnly ? `Role ${r.name} (built-in, read-only)` : r ? `Edit role ${r.name}` : 'New custom role'),
      general,
      h('div', { class: 'form-grid' },
        h('div', { class: 'field' }, h('label', { for: nameId }, 'Role name'), nameInput, h('div', { class: 'field-error', id: `${nameId}-err`, 'data-error-for': 'name', 'aria-live': 'polite' })),
        h('div', { class: 'field' }, h('label', { for: descId }, 'Description'), descInput, h('div', { class: 'field-error', id: `${descId}-err`, 'data-error-for': 'description', 'aria-live': 'polite' }))),
      h('p', { class: 'hint' }, 'Scopes: all (the account) > branch > team > assigned / self. Account-wide powers take only "all". You cannot grant more than you hold.'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'matrix' },
        h('caption', {}, 'Permissions and their scopes'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Permission'), h('th', { scope: 'col' }, 'Scope'))),
        h('tbody', {}, rows))),
      h('div', { class: 'actions form-actions' }, submit, h('button', { type: 'button', onclick: () => clear(formHost) }, readOnly ? 'Close' : 'Cancel')));
    el.addEventListener('submit', async (e) => {
      e.preventDefault();
      clearErrors(el);
      const name = nameInput.value.trim();
      const grants = {};
      for (const [perm, s] of Object.entries(selects)) if (s.value) grants[perm] = s.value;
      if (!name) {
        el.querySelector('[data-error-for="name"]').textContent = 'Give the role a name.';
        nameInput.setAttribute('aria-invalid', 'true');
        nameInput.focus();
        return;
      }
      if (!Object.keys(grants).length) { general.textContent = 'Grant at least one permission.'; return; }
      await busy(submit, async () => {
        try {
          const body = { name, description: descInput.value.trim(), grants };
          if (r) await api('PATCH', `/v1/admin/roles/${encodeURIComponent(r.id)}`, body);
          else await api('POST', '/v1/admin/roles', body, { idempotencyKey: crypto.randomUUID() });
          await done(`Role ${name} saved`)();
        } catch (err) {
          showApiError(el, err);
        }
      });
    });
    clear(formHost);
    formHost.appendChild(el);
    (readOnly ? el.querySelector('button[type=button]') : nameInput).focus();
  }

  async function deleteRole(r) {
    if (!await confirmDialog(`Delete the role ${r.name}?`, { okLabel: 'Delete', danger: true })) return;
    try {
      await api('DELETE', `/v1/admin/roles/${encodeURIComponent(r.id)}`);
      await done(`Role ${r.name} deleted`)();
    } catch (err) { toast(humanError(err), 'error'); }
  }

  await reload();
  return { shortcuts: { n: () => userForm(null) } };
}
