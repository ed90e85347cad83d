// Embeds the widget the way a customer's page would: one <script src="…/widget.js"> tag.
// (The hub's CSP blocks inline scripts, so this small external file writes the tag.)
(function () {
  'use strict';
  var params = new URLSearchParams(location.search);
  var inbox = params.get('inbox') || 'website';
  var attrs = { 'data-inbox': inbox };
  [['title', 'data-title'], ['color', 'data-color'], ['name', 'data-name'], ['email', 'data-email'],
    ['identifier', 'data-identifier'], ['identifier_hash', 'data-identifier-hash']].forEach(function (p) {
    var v = params.get(p[0]);
    if (v) attrs[p[1]] = v;
  });

  var s = document.createElement('script');
  s.src = '/widget.js';
  s.async = true;
  Object.keys(attrs).forEach(function (k) { s.setAttribute(k, attrs[k]); });
  document.body.appendChild(s);

  document.getElementById('demo-inbox').textContent = inbox;
  var snippet = '<script src="' + location.origin + '/widget.js" data-inbox="' + inbox + '" async></' + 'script>';
  document.getElementById('demo-snippet').textContent = snippet;

  document.getElementById('demo-open').addEventListener('click', function () {
    if (window.Switchboard) window.Switchboard.open();
  });
  document.getElementById('demo-close').addEventListener('click', function () {
    if (window.Switchboard) window.Switchboard.close();
  });
  document.getElementById('demo-reset').addEventListener('click', function () {
    var prefix = 'switchboard:' + inbox + ':';
    Object.keys(localStorage).forEach(function (k) {
      if (k.indexOf(prefix) === 0) localStorage.removeItem(k);
    });
    location.reload();
  });
})();
