// fengkong console: the queue's keyboard shortcuts, and the CSRF header on htmx requests.
// Shipped inside the package (no build step, nothing fetched at run time).
(function () {
  "use strict";
  var token = document.querySelector('meta[name="csrf-token"]');
  // a refusal (4xx) is swapped too: the server retargets it to #flash (HX-Retarget), so
  // the message naming the field shows where the person is working
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.xhr.status >= 400 && e.detail.xhr.status < 500) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  document.addEventListener("htmx:configRequest", function (e) {
    if (token) { e.detail.headers["X-CSRF-Token"] = token.content; }
  });

  var rows = function () { return Array.prototype.slice.call(document.querySelectorAll("tr[data-case]")); };
  var current = 0;
  function select(i) {
    var all = rows();
    if (!all.length) { return; }
    current = Math.max(0, Math.min(i, all.length - 1));
    all.forEach(function (r, j) { r.classList.toggle("selected", j === current); });
    all[current].scrollIntoView({block: "nearest"});
  }
  function press(action) {
    var row = rows()[current];
    if (!row) { return; }
    var button = row.querySelector('[data-key="' + action + '"]');
    if (button) { button.click(); }
  }
  document.addEventListener("keydown", function (e) {
    if (!document.querySelector("table.queue")) { return; }
    var tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "j") { select(current + 1); }
    else if (e.key === "k") { select(current - 1); }
    else if (e.key === "Enter") { press("open"); }
    else if (e.key === "c" || e.key === "f" || e.key === "l" || e.key === "n") { press(e.key); }
    else { return; }
    e.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", function () { select(0); });
  document.addEventListener("htmx:afterSettle", function () { select(current); });
})();
