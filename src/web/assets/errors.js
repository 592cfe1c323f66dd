// Loaded first by index.html (a file, not an inline script, so that the
// page's Content-Security-Policy allows scripts from 'self' only).
// Counts errors before anything else runs, so a failing script shows up too
// (body[data-errors], read by tests/live_page.rs).
(function () {
  function count() {
    var b = document.body;
    b.dataset.errors = String((parseInt(b.dataset.errors, 10) || 0) + 1);
  }
  window.addEventListener('error', count);
  window.addEventListener('unhandledrejection', count);
})();
