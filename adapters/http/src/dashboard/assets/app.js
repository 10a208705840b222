// mailroom dashboard: the little the pages need beyond HTML and CSS.
"use strict";
document.addEventListener("click", function (event) {
  // Copy buttons: the value named by data-copy.
  var button = event.target.closest("button.copy");
  if (!button) return;
  var text = button.getAttribute("data-copy") || "";
  var done = function () {
    button.classList.add("done");
    setTimeout(function () { button.classList.remove("done"); }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () {});
  } else {
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* nothing to do */ }
    area.remove();
  }
});
// A log named in the address (from an email's "View log") opens.
function openFromHash() {
  if (location.hash.indexOf("#log-") !== 0) return;
  var target = document.getElementById(location.hash.slice(1));
  if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
}
window.addEventListener("hashchange", openFromHash);
document.addEventListener("DOMContentLoaded", openFromHash);
// Escape closes an open help drawer.
document.addEventListener("keydown", function (event) {
  if (event.key !== "Escape") return;
  document.querySelectorAll("details.drawer[open]").forEach(function (d) { d.open = false; });
});
