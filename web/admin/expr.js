// An expression field: a textarea over a mirrored backdrop that marks each problem's position
// (line:column from the API), with the problems listed beside it in [data-error-for].
import { h, clear, nextId } from './util.js';

/** The code-point index of a 1-based line and column in `chars` (an array of code points). */
export function indexOf(chars, line, column) {
  let l = 1;
  let i = 0;
  while (l < line && i < chars.length) {
    if (chars[i] === '\n') l++;
    i++;
  }
  return Math.min(i + Math.max(0, column - 1), chars.length);
}

/** The [start, end) code-point span to mark for a problem starting at `start`. */
export function spanAt(chars, start) {
  if (start >= chars.length) return [chars.length, chars.length];
  const word = /[\p{L}\p{N}_.]/u;
  let end = start + 1;
  if (word.test(chars[start])) while (end < chars.length && word.test(chars[end])) end++;
  else if (chars[start] === '"' || chars[start] === "'") {
    const q = chars[start];
    while (end < chars.length && chars[end] !== q && chars[end] !== '\n') end++;
    if (end < chars.length && chars[end] === q) end++;
  }
  return [start, end];
}

/**
 * exprField({field, label, value, rows, hint, onInput}) →
 *   {wrap, textarea, errorEl, setProblems(list), clearProblems(), value(), focusProblem(p)}
 * `field` is the API field name (`match`, `steps[0].target`): it is the textarea's data-field
 * and the error slot's data-error-for.
 */
export function exprField({ field, label, value = '', rows = 2, hint, onInput, placeholder }) {
  const id = nextId('expr');
  const errId = `${id}-err`;
  const hintId = hint ? `${id}-hint` : null;
  const marks = h('div', { class: 'expr-marks' });
  const backdrop = h('div', { class: 'expr-backdrop', 'aria-hidden': 'true' }, marks);
  const textarea = h('textarea', {
    id, rows, class: 'expr-input mono', spellcheck: 'false', autocapitalize: 'off', autocomplete: 'off',
    'data-field': field, name: field, placeholder,
    'aria-describedby': [hintId, errId].filter(Boolean).join(' '),
  });
  textarea.value = value;
  const errorEl = h('ul', { class: 'field-error expr-errors', id: errId, 'data-error-for': field, 'aria-live': 'polite' });
  const wrap = h('div', { class: 'field expr-field' },
    h('label', { for: id }, label),
    h('div', { class: 'expr-box' }, backdrop, textarea),
    hint ? h('div', { class: 'hint', id: hintId }, hint) : null,
    errorEl);

  let problems = [];
  function paint() {
    const chars = Array.from(textarea.value);
    const spans = problems
      .filter((p) => p.line && p.column)
      .map((p) => spanAt(chars, indexOf(chars, p.line, p.column)))
      .sort((a, b) => a[0] - b[0]);
    clear(marks);
    let at = 0;
    for (const [s, e] of spans) {
      if (s < at) continue; // overlapping marks: keep the first
      if (s > at) marks.appendChild(document.createTextNode(chars.slice(at, s).join('')));
      marks.appendChild(h('mark', { class: s === e ? 'eof' : '' }, s === e ? ' ' : chars.slice(s, e).join('')));
      at = e;
    }
    marks.appendChild(document.createTextNode(chars.slice(at).join('') + '\n'));
    backdrop.scrollTop = textarea.scrollTop;
    backdrop.scrollLeft = textarea.scrollLeft;
  }

  function focusProblem(p) {
    const chars = Array.from(textarea.value);
    const [s, e] = spanAt(chars, indexOf(chars, p.line || 1, p.column || 1));
    // selection offsets are UTF-16 units
    const u = (n) => chars.slice(0, n).join('').length;
    textarea.focus();
    textarea.setSelectionRange(u(s), u(Math.max(e, s)));
  }

  function setProblems(list) {
    problems = list || [];
    clear(errorEl);
    for (const p of problems) {
      const text = p.line && p.column ? `${p.line}:${p.column}: ${p.message}` : p.message;
      const item = p.line && p.column
        ? h('button', { type: 'button', class: 'problem', onclick: () => focusProblem(p), title: 'Show this position in the field' }, text)
        : h('span', { class: 'problem' }, text);
      errorEl.appendChild(h('li', {}, item));
    }
    if (problems.length) textarea.setAttribute('aria-invalid', 'true');
    else textarea.removeAttribute('aria-invalid');
    wrap.classList.toggle('has-error', problems.length > 0);
    paint();
  }

  textarea.addEventListener('input', () => {
    // Positions are stale once the text changes: keep the list, drop the marks until the
    // next validation answers.
    const keep = problems;
    problems = [];
    paint();
    problems = keep;
    if (onInput) onInput();
  });
  textarea.addEventListener('scroll', () => {
    backdrop.scrollTop = textarea.scrollTop;
    backdrop.scrollLeft = textarea.scrollLeft;
  });
  paint();

  return {
    wrap, textarea, errorEl, setProblems, focusProblem,
    clearProblems: () => setProblems([]),
    value: () => textarea.value,
    get problems() { return problems; },
  };
}
