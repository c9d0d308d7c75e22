// The web UI's one script besides htmx. The Content-Security-Policy allows no inline script,
// no inline handler (on*=) and no eval, so everything a page does beyond htmx is here.
(function () {
  "use strict";

  function flash(text) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.hidden = !text;
  }

  // An error answer (a page or a fragment of ours) shown as text above the page.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var text = (doc.body && doc.body.textContent || "").trim();
    flash(text || "the request failed (" + xhr.status + ")");
  });
  document.addEventListener("htmx:sendError", function () {
    flash("the server did not answer; is genspool running?");
  });
  // A successful action (not a poll) clears an earlier error.
  document.addEventListener("htmx:afterRequest", function (event) {
    var verb = event.detail.requestConfig && event.detail.requestConfig.verb;
    if (event.detail.successful && verb && verb !== "get") flash("");
  });

  // "Select every row" of the dead letters.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box || box.id !== "select-all") return;
    document.querySelectorAll("#dlq-table input[name=ids]:not(:disabled)").forEach(function (row) {
      row.checked = box.checked;
    });
  });
})();
