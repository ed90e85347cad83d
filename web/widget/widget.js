/*
 * Switchboard web-chat widget.
 *
 * One classic script, no imports, no dependencies. A business embeds it with
 *
 *   <script src="https://hub.example.com/widget.js" data-inbox="website" async></script>
 *
 * Optional attributes: data-identifier + data-identifier-hash (a customer the business knows;
 * the hash is the hex HMAC-SHA256 of the identifier under the inbox's identity secret, computed
 * on the business's server), data-name, data-email, data-title, data-color.
 *
 * The UI lives in an open shadow root on <div id="switchboard-widget">, styled only by
 * {hub}/ui/widget/widget.css (no inline styles, so strict CSPs are fine). All API calls go to the
 * hub that served this script; no cookies are used. Visitor state lives in the site's
 * localStorage under "switchboard:{inbox}:" + token, expires_at_ms, identifier, last_event_id,
 * conversation_id and outbox (messages the hub has not confirmed yet). The conversation itself
 * is fetched from GET /v1/webchat/{inbox}/messages on load, then kept live by the visitor socket
 * (resumed with last_event_id after a drop).
 *
 * Public API (minimal): window.Switchboard.open(), .close(), .toggle(), .isOpen().
 */
(function () {
  'use strict';

  if (document.getElementById('switchboard-widget') || (window.Switchboard && window.Switchboard.version)) {
    return; // embedded twice: the first copy wins
  }

  // ---------------------------------------------------------------------------------------------
  // Configuration: from our own <script> element.

  function findScript() {
    if (document.currentScript && document.currentScript.src) return document.currentScript;
    var scripts = document.getElementsByTagName('script');
    for (var i = scripts.length - 1; i >= 0; i--) {
      var src = scripts[i].src || '';
      if (/\/widget\.js(?:[?#].*)?$/.test(src)) return scripts[i];
    }
    return null;
  }

  var script = findScript();
  if (!script) {
    console.warn('Switchboard widget: cannot find its own <script src=".../widget.js"> element.');
    return;
  }

  var HUB = new URL(script.src, location.href).origin;
  var data = script.dataset;
  var INBOX = (data.inbox || 'website').trim();
  var CFG = {
    identifier: nonEmpty(data.identifier),
    identifierHash: nonEmpty(data.identifierHash),
    name: nonEmpty(data.name),
    email: nonEmpty(data.email),
    title: nonEmpty(data.title) || 'Chat with us',
    color: nonEmpty(data.color),
  };
  var API = HUB + '/v1/webchat/' + encodeURIComponent(INBOX);
  var MAX_TEXT = 4096;
  var KEEP_MESSAGES = 50; // unsent messages kept across reloads
  var HISTORY_LIMIT = 100; // messages fetched on a reload

  function nonEmpty(v) {
    if (v == null) return null;
    v = String(v).trim();
    return v ? v : null;
  }

  // ---------------------------------------------------------------------------------------------
  // Storage: the site's localStorage, namespaced by inbox; memory when storage is unavailable.

  var PREFIX = 'switchboard:' + INBOX + ':';
  var memory = {};
  var store = {
    get: function (k) {
      try {
        var v = window.localStorage.getItem(PREFIX + k);
        return v === null ? (k in memory ? memory[k] : null) : v;
      } catch (e) {
        return k in memory ? memory[k] : null;
      }
    },
    set: function (k, v) {
      memory[k] = String(v);
      try { window.localStorage.setItem(PREFIX + k, String(v)); } catch (e) { /* memory only */ }
    },
    del: function (k) {
      delete memory[k];
      try { window.localStorage.removeItem(PREFIX + k); } catch (e) { /* memory only */ }
    },
    getJSON: function (k, fallback) {
      var v = store.get(k);
      if (v == null) return fallback;
      try { return JSON.parse(v); } catch (e) { return fallback; }
    },
  };

  // ---------------------------------------------------------------------------------------------
  // State.

  var state = {
    token: store.get('token'),
    expiresAt: Number(store.get('expires_at_ms')) || 0,
    lastEventId: store.get('last_event_id') != null ? Number(store.get('last_event_id')) : null,
    conversationId: store.get('conversation_id'),
    // The conversation itself comes from GET /messages; only what the hub has not confirmed yet
    // (the outbox) is kept in the site's storage, to be sent (or matched) after a reload.
    messages: store.getJSON('outbox', []),
    open: false,
    unread: 0,
    historySupported: null, // unknown until GET /messages has been tried
    starting: null, // the Promise of a session being started
  };
  if (!Array.isArray(state.messages)) state.messages = [];
  store.del('messages'); // the local copy kept before the hub had GET /messages
  state.messages = state.messages.filter(function (m) {
    // Confirmed but never echoed for a minute: it is in the history by now.
    return m && m.author === 'visitor' && m.client_id && !m.id &&
      (m.status !== 'sent' || Date.now() - m.created_at_ms < 60000);
  });
  // A different known customer than the one the stored session belongs to: start over.
  if (state.token && (store.get('identifier') || null) !== (CFG.identifier || null)) {
    forgetSession();
  }
  if (state.token && state.expiresAt && state.expiresAt < Date.now()) forgetSession();
  // Messages left pending by a closed page are retried.
  state.messages.forEach(function (m) {
    if (m.author === 'visitor' && !m.id && (m.status === 'pending' || m.status === 'retrying')) {
      m.status = 'pending';
    }
  });

  function saveSession() {
    if (state.token) {
      store.set('token', state.token);
      store.set('expires_at_ms', state.expiresAt || 0);
      if (CFG.identifier) store.set('identifier', CFG.identifier); else store.del('identifier');
    }
  }

  function saveLastEventId(id) {
    if (typeof id !== 'number' || !isFinite(id)) return;
    if (state.lastEventId != null && id <= state.lastEventId) return;
    state.lastEventId = id;
    store.set('last_event_id', id);
  }

  var saveTimer = null;
  function saveMessages() {
    if (saveTimer) return;
    saveTimer = setTimeout(function () {
      saveTimer = null;
      var outbox = state.messages.filter(function (m) { return m.author === 'visitor' && !m.id; });
      var keep = outbox.slice(-KEEP_MESSAGES).map(function (m) {
        return {
          id: m.id || null, client_id: m.client_id || null, author: m.author, text: m.text,
          content: m.content || null, status: m.status, created_at_ms: m.created_at_ms,
          conversation_id: m.conversation_id || null,
        };
      });
      try {
        if (keep.length) store.set('outbox', JSON.stringify(keep)); else store.del('outbox');
      } catch (e) { /* full: skip */ }
    }, 50);
  }

  function forgetSession() {
    state.token = null;
    state.expiresAt = 0;
    state.lastEventId = null;
    state.conversationId = null;
    ['token', 'expires_at_ms', 'last_event_id', 'conversation_id', 'identifier'].forEach(store.del);
  }

  // ---------------------------------------------------------------------------------------------
  // DOM helpers (never innerHTML: messages are hostile input).

  function h(tag, attrs) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    appendChildren(el, Array.prototype.slice.call(arguments, 2));
    return el;
  }

  var SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(paths, cls) {
    var el = document.createElementNS(SVG_NS, 'svg');
    el.setAttribute('viewBox', '0 0 24 24');
    el.setAttribute('aria-hidden', 'true');
    el.setAttribute('focusable', 'false');
    el.setAttribute('class', cls || 'sb-icon');
    paths.forEach(function (d) {
      var p = document.createElementNS(SVG_NS, 'path');
      p.setAttribute('d', d);
      el.appendChild(p);
    });
    return el;
  }

  function setAttrs(el, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k.slice(0, 2) === 'on' && typeof v === 'function') {
        el.addEventListener(k.slice(2).toLowerCase(), v);
      } else if (k === 'class') {
        el.className = v;
      } else if (k === 'hidden') {
        el.hidden = !!v;
      } else if (k === 'text') {
        el.textContent = v;
      } else {
        el.setAttribute(k, v === true ? '' : String(v));
      }
    });
  }

  function appendChildren(el, children) {
    children.forEach(function (c) {
      if (c == null || c === false) return;
      if (Array.isArray(c)) appendChildren(el, c);
      else el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
  }

  var ICON_CHAT = ['M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z'];
  var ICON_CLOSE = ['M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6 10.6 12 5 6.4z'];
  var ICON_SEND = ['M3 20.5 21.5 12 3 3.5l.01 6.6L16 12 3.01 13.9z'];

  // ---------------------------------------------------------------------------------------------
  // The UI.

  var host = document.createElement('div');
  host.id = 'switchboard-widget';
  var root = host.attachShadow({ mode: 'open' });

  var ui = {};
  ui.css = h('link', { rel: 'stylesheet', href: HUB + '/ui/widget/widget.css' });
  ui.badge = h('span', { class: 'sb-badge', hidden: true, 'aria-hidden': 'true' });
  ui.launcherLabel = h('span', { class: 'sb-visually-hidden', text: 'Open chat' });
  ui.launcher = h('button', {
    id: 'sb-launcher', class: 'sb-launcher', type: 'button',
    'aria-expanded': 'false', 'aria-controls': 'sb-window', 'aria-haspopup': 'dialog',
    onclick: function () { toggle(); },
  }, svg(ICON_CHAT, 'sb-icon sb-icon-chat'), svg(ICON_CLOSE, 'sb-icon sb-icon-close'), ui.launcherLabel, ui.badge);

  ui.title = h('h2', { id: 'sb-title', class: 'sb-title', text: CFG.title });
  ui.statusText = h('span', { class: 'sb-status-text', text: 'Connecting…' });
  ui.status = h('p', { id: 'sb-status', class: 'sb-status', 'data-state': 'connecting', 'aria-live': 'polite' },
    h('span', { class: 'sb-dot', 'aria-hidden': 'true' }), ui.statusText);
  ui.close = h('button', {
    id: 'sb-close', class: 'sb-close', type: 'button', 'aria-label': 'Close chat', title: 'Close chat (Esc)',
    onclick: function () { close(); },
  }, svg(ICON_CLOSE));

  ui.list = h('ol', { class: 'sb-list', id: 'sb-messages' });
  ui.empty = h('p', { class: 'sb-empty', id: 'sb-empty', text: 'Hi! Send us a message and we will reply right here.' });
  ui.log = h('div', {
    class: 'sb-log', id: 'sb-log', role: 'log', 'aria-live': 'polite', 'aria-relevant': 'additions',
    'aria-label': 'Messages', tabindex: '0',
  }, ui.empty, ui.list);
  ui.typing = h('p', { id: 'sb-typing', class: 'sb-typing', hidden: true, 'aria-live': 'polite' },
    h('span', { class: 'sb-typing-dots', 'aria-hidden': 'true' }, h('span'), h('span'), h('span')),
    h('span', { text: 'Agent is typing…' }));
  ui.error = h('p', { id: 'sb-error', class: 'sb-error', role: 'alert', hidden: true });
  ui.input = h('textarea', {
    id: 'sb-input', class: 'sb-input', rows: '1', maxlength: String(MAX_TEXT),
    placeholder: 'Write a message…', 'aria-label': 'Message', autocomplete: 'off',
    'aria-describedby': 'sb-hint',
  });
  ui.hint = h('span', { id: 'sb-hint', class: 'sb-visually-hidden', text: 'Enter sends, Shift+Enter adds a line, Escape closes the chat.' });
  ui.send = h('button', { id: 'sb-send', class: 'sb-send', type: 'submit', 'aria-label': 'Send message', title: 'Send (Enter)' },
    svg(ICON_SEND));
  ui.form = h('form', { class: 'sb-composer', novalidate: true, 'aria-label': 'Write a message' },
    ui.input, ui.send, ui.hint);
  ui.window = h('section', {
    id: 'sb-window', class: 'sb-window', role: 'dialog', 'aria-modal': 'false',
    'aria-labelledby': 'sb-title', hidden: true,
  },
  h('header', { class: 'sb-header' }, h('div', { class: 'sb-heading' }, ui.title, ui.status), ui.close),
  ui.log, ui.typing, ui.error, ui.form);

  ui.root = h('div', { class: 'sb-root', hidden: true }, ui.window, ui.launcher);
  root.appendChild(ui.css);
  root.appendChild(ui.root);
  // Shown once its stylesheet has loaded, so an unstyled widget never flashes on the page.
  ui.css.addEventListener('load', function () { ui.root.hidden = false; });
  ui.css.addEventListener('error', function () {
    console.warn('Switchboard widget: could not load ' + ui.css.href + ' (check the site\'s style-src CSP).');
  });

  updateLauncherLabel();

  function applyColor(color) {
    if (!color || !(window.CSS && CSS.supports && CSS.supports('color', color))) return;
    // CSSOM custom properties, not a style attribute: allowed under style-src 'self'.
    host.style.setProperty('--sb-accent', color);
    var probe = document.createElement('span');
    probe.style.setProperty('color', color);
    root.appendChild(probe);
    var rgb = (getComputedStyle(probe).color.match(/[\d.]+/g) || []).map(Number);
    root.removeChild(probe);
    if (rgb.length >= 3) {
      var lum = function (c) { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
      var L = 0.2126 * lum(rgb[0]) + 0.7152 * lum(rgb[1]) + 0.0722 * lum(rgb[2]);
      // Whichever of white or near-black text contrasts more with the accent.
      host.style.setProperty('--sb-on-accent', (1.05 / (L + 0.05)) >= ((L + 0.05) / 0.06) ? '#ffffff' : '#111111');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Opening and closing.

  function open() {
    if (state.open) { ui.input.focus(); return; }
    state.open = true;
    ui.window.hidden = false;
    ui.root.classList.add('sb-is-open');
    ui.launcher.setAttribute('aria-expanded', 'true');
    state.unread = 0;
    updateLauncherLabel();
    scrollToEnd();
    ui.input.focus();
    ensureSession().then(function () { connect(); }, function () { /* shown in #sb-error */ });
  }

  function close() {
    if (!state.open) return;
    state.open = false;
    setTypingOut(false);
    ui.window.hidden = true;
    ui.root.classList.remove('sb-is-open');
    ui.launcher.setAttribute('aria-expanded', 'false');
    updateLauncherLabel();
    ui.launcher.focus();
  }

  function toggle() { if (state.open) close(); else open(); }

  function updateLauncherLabel() {
    var label = state.open ? 'Close chat' : 'Open chat';
    if (!state.open && state.unread > 0) {
      label += ', ' + state.unread + ' new ' + (state.unread === 1 ? 'message' : 'messages');
    }
    ui.launcherLabel.textContent = label;
    ui.badge.textContent = state.unread > 9 ? '9+' : String(state.unread);
    ui.badge.hidden = state.open || state.unread === 0;
  }

  root.addEventListener('keydown', function (e) {
    if (e.key === 'Escape' && state.open) {
      e.preventDefault();
      e.stopPropagation();
      close();
    }
  });

  // ---------------------------------------------------------------------------------------------
  // HTTP.

  function HubError(status, body, fallback) {
    var err = (body && body.error) || {};
    this.status = status;
    this.code = err.code || (status ? 'http_' + status : 'network');
    this.message = err.message || fallback || 'Request failed';
    this.details = err.details || [];
    this.retryAfter = 0;
  }

  function request(method, path, body, token) {
    var headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = 'Bearer ' + token;
    return fetch(API + path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      mode: 'cors',
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'origin',
    }).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
        if (res.ok) return json;
        var err = new HubError(res.status, json);
        err.retryAfter = Number(res.headers.get('Retry-After')) || 0;
        throw err;
      });
    }, function () {
      throw new HubError(0, null, 'Network error');
    });
  }

  function humanError(err) {
    if (!err || !err.status) return 'You seem to be offline. We will keep trying.';
    if (err.status === 429) return 'Too many messages at once. Please wait a moment.';
    if (err.status === 404) return 'This chat is not available.';
    if (err.status >= 500) return 'The chat is having trouble. We will keep trying.';
    var detail = err.details && err.details[0];
    if (detail && detail.field === 'text') return 'Message ' + detail.message + '.';
    return err.message || 'Something went wrong.';
  }

  function showError(text) {
    ui.error.textContent = text || '';
    ui.error.hidden = !text;
  }

  // ---------------------------------------------------------------------------------------------
  // The visitor session.

  function ensureSession() {
    if (state.token) return Promise.resolve(state.token);
    if (state.starting) return state.starting;
    setStatus('connecting');
    state.starting = startSession(true).then(function (token) {
      state.starting = null;
      showError('');
      return token;
    }, function (err) {
      state.starting = null;
      showError(err.status === 404 ? 'This chat is not available.' : humanError(err));
      throw err;
    });
    return state.starting;
  }

  function startSession(withIdentity) {
    var body = {};
    if (withIdentity && CFG.identifier && CFG.identifierHash) {
      body.identifier = CFG.identifier;
      body.identifier_hash = CFG.identifierHash;
    }
    if (CFG.name) body.name = CFG.name;
    if (CFG.email) body.email = CFG.email;
    return request('POST', '/sessions', body).then(function (s) {
      state.token = s.visitor_token;
      state.expiresAt = s.expires_at_ms || 0;
      state.lastEventId = null;
      store.del('last_event_id');
      saveSession();
      if (!withIdentity) store.del('identifier');
      // A known customer may have written before (from another device): show that history.
      if (s.identified) return loadHistory().then(function () { return state.token; }, function () { return state.token; });
      return state.token;
    }, function (err) {
      if (withIdentity && body.identifier && (err.status === 401 || err.status === 422)) {
        // The business's identity settings are wrong: chat anonymously rather than not at all.
        console.warn('Switchboard widget: identity refused (' + err.code + '); continuing anonymously.');
        return startSession(false);
      }
      if (err.status === 422 && (body.name || body.email)) {
        console.warn('Switchboard widget: name/email refused (' + err.message + '); continuing without them.');
        CFG.name = CFG.email = null;
        return startSession(withIdentity);
      }
      throw err;
    });
  }

  /** The token was refused (401): forget it and everything tied to it; start fresh if open. */
  function sessionRefused() {
    disconnect();
    forgetSession();
    // Confirmed messages belonged to the old visitor; unsent ones are sent by the new one.
    state.messages = state.messages.filter(function (m) { return m.author === 'visitor' && !m.id && m.status !== 'sent'; });
    saveMessages();
    renderAll();
    if (state.open || hasUnsent()) {
      ensureSession().then(function () { connect(); pump(); }, function () {});
    } else {
      setStatus('connecting');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Messages.

  function newClientId() {
    if (window.crypto && crypto.randomUUID) {
      try { return 'wc_' + crypto.randomUUID(); } catch (e) { /* insecure context */ }
    }
    var bytes = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return 'wc_' + Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join('');
  }

  function textOf(content) {
    if (!content || typeof content !== 'object') return '';
    switch (content.type) {
      case 'text': return content.text || '';
      case 'media': return content.caption || '';
      case 'template': return content.text || '';
      case 'location': return [content.name, content.address].filter(Boolean).join(', ') || 'Shared a location';
      case 'interactive': return content.title || '';
      case 'erased': return 'This message was deleted.';
      default: return content.text || '';
    }
  }

  /** The client id a server message was sent with, when the hub tells us. */
  function clientIdOf(m) {
    if (m.client_message_id) return m.client_message_id;
    var p = m.provider_message_id;
    if (typeof p === 'string' && p.indexOf(':wc_') > 0) return p.slice(p.indexOf(':') + 1);
    return null;
  }

  function fromServer(m) {
    return {
      id: m.id,
      client_id: clientIdOf(m),
      author: m.direction === 'inbound' ? 'visitor' : 'agent',
      text: textOf(m.content),
      content: m.content || null,
      status: m.direction === 'inbound' ? 'sent' : (m.status || 'sent'),
      created_at_ms: m.created_at_ms || Date.now(),
      conversation_id: m.conversation_id || null,
    };
  }

  /** Merges a message from the hub (socket or history); returns true when it is new. */
  function upsertServerMessage(raw, announce) {
    if (!raw || !raw.id || raw.direction === 'note') return false;
    var m = fromServer(raw);
    if (m.conversation_id) setConversation(m.conversation_id);
    var existing = find(function (x) { return x.id === m.id; });
    if (!existing && m.author === 'visitor') {
      // Our own message coming back: by client id if the hub says, else the oldest unmatched
      // message we sent with the same text.
      existing = (m.client_id && find(function (x) { return !x.id && x.client_id === m.client_id; })) ||
        find(function (x) { return !x.id && x.author === 'visitor' && x.text === m.text; });
    }
    if (existing) {
      existing.id = m.id;
      existing.conversation_id = m.conversation_id;
      existing.content = m.content;
      if (m.author === 'agent') existing.status = m.status;
      else existing.status = 'sent';
      renderMessage(existing);
      saveMessages();
      return false;
    }
    state.messages.push(m);
    renderMessage(m);
    saveMessages();
    if (m.author === 'agent') {
      showTyping(false);
      if (announce && !state.open) {
        state.unread += 1;
        updateLauncherLabel();
      }
    }
    return true;
  }

  function find(pred) {
    for (var i = 0; i < state.messages.length; i++) if (pred(state.messages[i])) return state.messages[i];
    return null;
  }

  function setConversation(id) {
    if (id && id !== state.conversationId) {
      state.conversationId = id;
      store.set('conversation_id', id);
    }
  }

  function hasUnsent() {
    return state.messages.some(function (m) { return m.author === 'visitor' && !m.id && (m.status === 'pending' || m.status === 'retrying'); });
  }

  // The send queue: one message at a time, in order; a network error retries the head.
  var sending = false;
  var retryTimer = null;
  var retryAttempt = 0;

  function submit() {
    var text = ui.input.value.replace(/\s+$/, '').replace(/^\s*\n/, '');
    if (!text.trim()) {
      ui.input.focus();
      return;
    }
    if (text.length > MAX_TEXT) {
      showError('Messages can be at most ' + MAX_TEXT + ' characters.');
      return;
    }
    showError('');
    ui.input.value = '';
    setTypingOut(false);
    var m = {
      id: null, client_id: newClientId(), author: 'visitor', text: text,
      status: 'pending', created_at_ms: Date.now(), conversation_id: state.conversationId,
    };
    state.messages.push(m);
    renderMessage(m);
    saveMessages();
    scrollToEnd();
    pump();
  }

  function pump() {
    if (sending) return;
    var m = find(function (x) { return x.author === 'visitor' && !x.id && (x.status === 'pending' || x.status === 'retrying'); });
    if (!m) return;
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    sending = true;
    ensureSession().then(function (token) {
      return request('POST', '/messages', { client_message_id: m.client_id, text: m.text }, token);
    }).then(function () {
      sending = false;
      retryAttempt = 0;
      m.status = 'sent';
      renderMessage(m);
      saveMessages();
      showError('');
      connect();
      pump();
    }, function (err) {
      sending = false;
      if (err.status === 401) {
        sessionRefused();
        return;
      }
      if (err.status === 0 || err.status === 429 || err.status >= 500) {
        // Retry the same client_message_id: the hub records it once.
        retryAttempt += 1;
        m.status = 'retrying';
        renderMessage(m);
        saveMessages();
        var wait = Math.max(err.retryAfter * 1000, Math.min(30000, 1000 * Math.pow(2, retryAttempt - 1)));
        retryTimer = setTimeout(function () { retryTimer = null; pump(); }, wait);
        return;
      }
      // Refused for good (422, 404…): say why, and offer a retry by hand.
      m.status = 'failed';
      m.error = humanError(err);
      renderMessage(m);
      saveMessages();
      showError(m.error);
      pump();
    });
  }

  function retryNow(m) {
    if (m.status === 'failed' || m.status === 'retrying') {
      m.status = 'pending';
      renderMessage(m);
      retryAttempt = 0;
      if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
      pump();
    }
  }

  window.addEventListener('online', function () {
    if (hasUnsent()) { retryAttempt = 0; pump(); }
    if (state.token && !ws) { backoff = 0; scheduleConnect(0); }
  });

  // ---------------------------------------------------------------------------------------------
  // Rendering messages.

  var elements = {}; // key → <li>

  function keyOf(m) { return m.client_id ? 'c:' + m.client_id : 'm:' + m.id; }

  var timeFmt;
  try { timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }); } catch (e) { timeFmt = null; }
  function timeOf(ms) {
    var d = new Date(ms);
    return timeFmt ? timeFmt.format(d) : d.toTimeString().slice(0, 5);
  }

  var STATUS_LABEL = {
    pending: 'Sending…', retrying: 'Not sent yet, retrying…', failed: 'Not sent', sent: 'Sent',
    delivered: 'Delivered', read: 'Read',
  };

  function renderMessage(m) {
    var key = keyOf(m);
    var li = elements[key];
    var isNew = !li;
    if (isNew) {
      li = buildMessage(m);
      elements[key] = li;
    }
    li.className = 'sb-msg sb-msg-' + m.author + ' sb-state-' + m.status;
    li.setAttribute('data-author', m.author);
    li.setAttribute('data-direction', m.author === 'visitor' ? 'inbound' : 'outbound');
    li.setAttribute('data-status', m.status);
    if (m.id) li.setAttribute('data-message-id', m.id); else li.removeAttribute('data-message-id');
    if (m.client_id) li.setAttribute('data-client-id', m.client_id); else li.removeAttribute('data-client-id');
    // Updated in place (text changes), so the live region announces a message once.
    var parts = li.sbParts;
    if (parts.status) {
      parts.status.textContent = STATUS_LABEL[m.status] || m.status;
      parts.retry.hidden = !(m.status === 'failed' || m.status === 'retrying');
      parts.retry.sbMessage = m;
    }
    if (isNew) {
      ui.list.appendChild(li);
      ui.empty.hidden = true;
      scrollToEnd();
    }
  }

  function buildMessage(m) {
    var li = h('li', { class: 'sb-msg' });
    var who = h('span', { class: 'sb-visually-hidden', text: m.author === 'visitor' ? 'You: ' : 'Agent: ' });
    var bubble = h('div', { class: 'sb-bubble' }, who, h('span', { class: 'sb-text', text: m.text }));
    var att = attachmentsOf(m.content);
    if (att.length) bubble.appendChild(h('span', { class: 'sb-attachments' }, att));
    if (!m.text && !att.length) bubble.appendChild(h('span', { class: 'sb-text sb-unsupported', text: 'Unsupported message' }));
    li.appendChild(bubble);
    var meta = h('span', { class: 'sb-meta' },
      h('time', { datetime: new Date(m.created_at_ms).toISOString(), text: timeOf(m.created_at_ms) }));
    var parts = { status: null, retry: null };
    if (m.author === 'visitor') {
      parts.status = h('span', { class: 'sb-msg-status' });
      parts.retry = h('button', {
        type: 'button', class: 'sb-retry', text: 'Retry', 'aria-label': 'Retry sending this message', hidden: true,
        onclick: function () { if (parts.retry.sbMessage) retryNow(parts.retry.sbMessage); },
      });
      meta.appendChild(document.createTextNode(' · '));
      meta.appendChild(parts.status);
      meta.appendChild(parts.retry);
    }
    li.appendChild(meta);
    li.sbParts = parts;
    return li;
  }

  function attachmentsOf(content) {
    if (!content || content.type !== 'media' || !Array.isArray(content.attachments)) return [];
    return content.attachments.map(function (a) {
      var label = a.filename || (a.kind ? a.kind.charAt(0).toUpperCase() + a.kind.slice(1) : 'Attachment');
      var url = null;
      try {
        var u = new URL(a.url, HUB);
        if (u.protocol === 'https:' || u.protocol === 'http:') url = u.href;
      } catch (e) { url = null; }
      return url
        ? h('a', { class: 'sb-attachment', href: url, target: '_blank', rel: 'noopener noreferrer nofollow', text: label })
        : h('span', { class: 'sb-attachment', text: label });
    });
  }

  function renderAll() {
    while (ui.list.firstChild) ui.list.removeChild(ui.list.firstChild);
    elements = {};
    state.messages.forEach(renderMessage);
    ui.empty.hidden = state.messages.length > 0;
    scrollToEnd();
  }

  function scrollToEnd() {
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  // ---------------------------------------------------------------------------------------------
  // History (GET /messages, when the hub has it; otherwise the local copy).

  function loadHistory() {
    if (!state.token || state.historySupported === false) return Promise.resolve(false);
    var token = state.token;
    return request('GET', '/messages?limit=' + HISTORY_LIMIT, undefined, token).then(function (body) {
      state.historySupported = true;
      if (token !== state.token) return false;
      var list = (body && (body.messages || body.data || body.items)) || (Array.isArray(body) ? body : []);
      var unsent = state.messages.filter(function (m) { return !m.id && m.author === 'visitor'; });
      var previous = state.messages;
      state.messages = [];
      list.forEach(function (raw) {
        if (!raw || !raw.id || raw.direction === 'note') return;
        var m = fromServer(raw);
        // Keep the client id (and so the element) of our own messages we already knew.
        var before = null;
        for (var i = 0; i < previous.length; i++) if (previous[i].id === m.id) { before = previous[i]; break; }
        if (before && before.client_id) m.client_id = before.client_id;
        if (m.conversation_id) setConversation(m.conversation_id);
        state.messages.push(m);
      });
      // Unconfirmed messages of ours: matched to the history by client id or text, else kept.
      unsent.forEach(function (u) {
        var match = null;
        for (var i = 0; i < state.messages.length; i++) {
          var s = state.messages[i];
          if (s.author !== 'visitor' || s.claimed) continue;
          if ((s.client_id && s.client_id === u.client_id) || (!s.client_id && s.text === u.text && u.status === 'sent')) {
            match = s; break;
          }
        }
        if (match) { match.claimed = true; match.client_id = u.client_id; } else state.messages.push(u);
      });
      state.messages.forEach(function (m) { delete m.claimed; });
      if (body && typeof body.last_event_id === 'number') {
        state.lastEventId = body.last_event_id;
        store.set('last_event_id', body.last_event_id);
      }
      saveMessages();
      renderAll();
      return true;
    }, function (err) {
      if (err.status === 401) {
        sessionRefused();
        throw err;
      }
      if (err.status === 404 || err.status === 405) state.historySupported = false;
      return false;
    });
  }

  // ---------------------------------------------------------------------------------------------
  // The visitor socket: GET /v1/webchat/{inbox}/ws?token=…&last_event_id=…

  var ws = null;
  var connectTimer = null;
  var backoff = 0;
  var helloSeen = false;
  var failuresBeforeHello = 0;
  var heartbeat = null;
  var lastHeard = 0;

  function setStatus(s) {
    ui.status.setAttribute('data-state', s);
    ui.statusText.textContent = s === 'live' ? 'Connected' : s === 'reconnecting' ? 'Reconnecting…' : 'Connecting…';
  }

  function connect() {
    if (!state.token || ws || connectTimer) return;
    var url = HUB.replace(/^http/, 'ws') + '/v1/webchat/' + encodeURIComponent(INBOX) + '/ws?token=' +
      encodeURIComponent(state.token);
    if (state.lastEventId != null) url += '&last_event_id=' + state.lastEventId;
    var token = state.token;
    helloSeen = false;
    var sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      scheduleConnect(nextDelay());
      return;
    }
    ws = sock;
    if (ui.status.getAttribute('data-state') !== 'reconnecting') setStatus('connecting');

    sock.onmessage = function (ev) {
      if (sock !== ws) return;
      lastHeard = Date.now();
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      onFrame(frame);
    };
    sock.onclose = function (ev) {
      if (sock !== ws) return;
      ws = null;
      stopHeartbeat();
      showTyping(false);
      if (token !== state.token) return;
      if (ev.code === 4001) { sessionRefused(); return; }
      setStatus('reconnecting');
      if (!helloSeen) {
        failuresBeforeHello += 1;
        // The upgrade may have been refused (401 is invisible to a WebSocket): ask over HTTP.
        if (failuresBeforeHello >= 2) {
          checkToken().then(function (ok) { if (ok) scheduleConnect(nextDelay()); }, function () { scheduleConnect(nextDelay()); });
          return;
        }
      }
      scheduleConnect(ev.code === 1012 ? 0 : nextDelay());
    };
  }

  function nextDelay() {
    var d = Math.min(30000, 500 * Math.pow(2, backoff));
    backoff = Math.min(backoff + 1, 8);
    return d / 2 + Math.random() * d / 2;
  }

  function scheduleConnect(delay) {
    if (connectTimer) clearTimeout(connectTimer);
    connectTimer = setTimeout(function () { connectTimer = null; connect(); }, delay);
  }

  function disconnect() {
    if (connectTimer) { clearTimeout(connectTimer); connectTimer = null; }
    stopHeartbeat();
    if (ws) {
      var s = ws;
      ws = null;
      try { s.close(1000); } catch (e) { /* already closed */ }
    }
  }

  /** Whether the stored token is still accepted; a refusal starts over (sessionRefused). */
  function checkToken() {
    if (!state.token) return Promise.resolve(false);
    var probe = state.historySupported !== false
      ? request('GET', '/messages?limit=1', undefined, state.token)
      // Without the history endpoint: an empty message is refused with 401 for a bad token and
      // 422 for a good one, and records nothing.
      : request('POST', '/messages', {}, state.token);
    return probe.then(function () { return true; }, function (err) {
      if (err.status === 401) { sessionRefused(); return false; }
      if (err.status === 404 && state.historySupported !== false) state.historySupported = false;
      return true;
    });
  }

  function onFrame(f) {
    if (typeof f.id === 'number') saveLastEventId(f.id);
    switch (f.type) {
      case 'hello':
        helloSeen = true;
        failuresBeforeHello = 0;
        backoff = 0;
        if (state.lastEventId == null && f.data && typeof f.data.last_event_id === 'number') {
          saveLastEventId(f.data.last_event_id);
        }
        setStatus('live');
        startHeartbeat();
        break;
      case 'message.created':
        upsertServerMessage(f.data, true);
        break;
      case 'typing':
        if (f.data && !f.data.visitor) showTyping(!!f.data.typing);
        break;
      case 'resync.required':
        // Events were missed for good: refetch what we can, then carry on from the named id.
        loadHistory().catch(function () {}).then(function () {
          if (f.data && typeof f.data.last_event_id === 'number') {
            state.lastEventId = f.data.last_event_id;
            store.set('last_event_id', f.data.last_event_id);
          }
        });
        break;
      default:
        break; // pong, ack, error, message.status…: nothing to show
    }
  }

  function startHeartbeat() {
    stopHeartbeat();
    lastHeard = Date.now();
    // The hub pings at the WebSocket level (invisible here); our own ping notices a dead link.
    heartbeat = setInterval(function () {
      if (!ws) return;
      if (Date.now() - lastHeard > 60000) {
        try { ws.close(4000); } catch (e) { /* ignore */ }
        var s = ws;
        ws = null;
        if (s) { s.onclose = null; }
        stopHeartbeat();
        setStatus('reconnecting');
        scheduleConnect(0);
        return;
      }
      sendFrame({ type: 'ping' });
    }, 25000);
  }

  function stopHeartbeat() {
    if (heartbeat) { clearInterval(heartbeat); heartbeat = null; }
  }

  function sendFrame(obj) {
    if (!ws || ws.readyState !== 1 || !helloSeen) return false;
    try { ws.send(JSON.stringify(obj)); return true; } catch (e) { return false; }
  }

  // ---------------------------------------------------------------------------------------------
  // Typing, both ways.

  var typingHideTimer = null;
  function showTyping(on) {
    if (typingHideTimer) { clearTimeout(typingHideTimer); typingHideTimer = null; }
    ui.typing.hidden = !on;
    if (on) {
      // An agent's console that vanished never says "stopped".
      typingHideTimer = setTimeout(function () { ui.typing.hidden = true; }, 8000);
      if (state.open) scrollToEnd();
    }
  }

  var typingOut = false;
  var typingSentAt = 0;
  var typingStopTimer = null;
  function setTypingOut(on) {
    if (typingStopTimer) { clearTimeout(typingStopTimer); typingStopTimer = null; }
    if (!state.conversationId) { typingOut = false; return; }
    if (on) {
      var now = Date.now();
      // Throttled: at most one "typing" every 3 s while keys keep coming.
      if (!typingOut || now - typingSentAt > 3000) {
        if (sendFrame({ type: 'typing', conversation_id: state.conversationId, typing: true })) {
          typingOut = true;
          typingSentAt = now;
        }
      }
      typingStopTimer = setTimeout(function () { setTypingOut(false); }, 4000);
    } else if (typingOut) {
      typingOut = false;
      sendFrame({ type: 'typing', conversation_id: state.conversationId, typing: false });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Composer events.

  ui.form.addEventListener('submit', function (e) {
    e.preventDefault();
    submit();
  });
  ui.input.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  ui.input.addEventListener('input', function () {
    if (ui.input.value.trim()) setTypingOut(true); else setTypingOut(false);
    if (!ui.error.hidden && ui.input.value.length <= MAX_TEXT) showError('');
  });

  // ---------------------------------------------------------------------------------------------
  // Start.

  function mount() {
    // The page's own rules (`div { … }`, `* { font: … !important }`) reach the host element
    // itself; an important CSSOM declaration (allowed by style-src CSPs, unlike a style
    // attribute in markup) beats them, and the UI inherits from .sb-root, not from the page.
    host.style.setProperty('all', 'initial', 'important');
    document.body.appendChild(host);
    applyColor(CFG.color); // needs the host in the document, to read the computed colour
    renderAll();
    if (state.token) {
      // A returning visitor: restore the conversation, then listen for replies.
      loadHistory().then(function () { connect(); pump(); }, function () {});
    } else if (hasUnsent()) {
      pump();
    }
  }

  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount);

  window.Switchboard = {
    version: '1',
    open: open,
    close: close,
    toggle: toggle,
    isOpen: function () { return state.open; },
  };
})();
