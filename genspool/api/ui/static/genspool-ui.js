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

  // -- live updates --------------------------------------------------------------------------
  // One EventSource per page (GET /ui/live, authenticated by the session cookie) follows what
  // the page marks with data-live ("kind:job id", "board", "playground") and, on a view's
  // first page, its new rows (data-live-feed). It answers with events:
  //   swap   HTML: each top-level element replaces the page's element of the same id (not
  //          when both show the same state, data-v);
  //   add    rows for the top of the list (data-live-feed), which keeps data-keep rows;
  //   delta  {"id", "text"}: appended to that job's [data-stream] box;
  //   hello  the stream's channel, sent with every htmx request (X-Live-Channel): the server
  //          follows a job the page submits on this stream from before it exists;
  //   done   nothing left to follow: the stream is closed.
  // What arrives for an element not on the page yet (an answer whose htmx response is still
  // on its way) waits for it, a few seconds at most. While the stream is down the page polls its
  // fragments instead (hx-trigger="gs:poll from:body", fired every 2 s by this script).
  var source = null, channel = "", following = {}, waiting = [], closedTicks = 0, retryIn = 1;
  var POLL_MS = 2000, WAIT_MS = 10000, WAIT_MAX = 500;

  function process(el) { if (window.htmx) window.htmx.process(el); }

  function fragments(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return Array.prototype.slice.call(t.content.children);
  }

  function swapOne(el) {
    var old = el.id && document.getElementById(el.id);
    if (!old) return false;
    var v = el.getAttribute("data-v");
    if (!v || v !== old.getAttribute("data-v")) {
      old.replaceWith(el);
      process(el);
    }
    return true;
  }

  function appendTo(d) {
    var box = document.querySelector('[data-stream="' + d.id + '"]');
    if (!box) return false;
    var last = box.lastChild;
    if (last && last.nodeType === 3) last.appendData(d.text);
    else box.appendChild(document.createTextNode(d.text));
    return true;
  }

  function fresh(w) { return Date.now() - w[0] < WAIT_MS; }

  // Only while a request of the page is on its way can its answer bring the element: else
  // the element is gone (a row below the last one kept) and what came for it is dropped.
  function later(apply, item) {
    if (waiting.length) retryWaiting();  // in order: what came first goes first
    if (apply(item)) return;
    var asking = document.querySelector(".htmx-request") || waiting.length;
    if (asking && waiting.length < WAIT_MAX) waiting.push([Date.now(), apply, item]);
  }

  function retryWaiting() {
    waiting = waiting.filter(function (w) { return fresh(w) && !w[1](w[2]); });
  }

  function addRows(html) {
    var body = document.querySelector("[data-live-feed]");
    if (!body) return;
    fragments(html).forEach(function (row) {
      var old = row.id && document.getElementById(row.id);
      if (old) old.replaceWith(row);
      else body.insertBefore(row, body.firstChild);
      if (row.hasAttribute("data-live")) row.setAttribute("data-live-on", channel);  // followed
      process(row);
    });
    var keep = parseInt(body.getAttribute("data-keep"), 10) || 25;
    while (body.children.length > keep) body.removeChild(body.lastElementChild);
    var empty = document.getElementById("no-rows");
    if (empty) empty.remove();
  }

  function stop() {
    document.body.setAttribute("data-live-state", "closed");
    if (source) source.close();
    source = null;
    channel = "";
    following = {};
  }

  function connect(items, feed) {
    stop();
    var url = (document.body.getAttribute("data-ui") || "") + "/live?watch=" +
      encodeURIComponent(items.join(",")) + (feed ? "&" + feed : "");
    items.forEach(function (i) { following[i] = true; });
    source = new EventSource(url);
    source.addEventListener("open", function () { closedTicks = 0; retryIn = 1; });
    source.addEventListener("hello", function (e) {
      channel = e.data;
      document.body.setAttribute("data-live-state", "open");
      sync();  // after a reconnect: what the page added on the old channel is asked for again
    });
    source.addEventListener("swap", function (e) {
      fragments(e.data).forEach(function (el) { later(swapOne, el); });
    });
    source.addEventListener("error", function () {  // it reconnects by itself (a new channel)
      channel = "";
      document.body.setAttribute("data-live-state", "down");
    });
    source.addEventListener("add", function (e) { addRows(e.data); });
    source.addEventListener("delta", function (e) { later(appendTo, JSON.parse(e.data)); });
    source.addEventListener("done", stop);
  }

  // Open the stream, or open it again when the page shows something it does not follow.
  // An element is followed when its item is in the stream's URL, or when the stream itself
  // said so (data-live-on: its channel).
  function sync() {
    var items = [], seen = {}, unfollowed = false;
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var item = el.getAttribute("data-live");
      if (!seen[item]) items.push(item);
      seen[item] = true;
      if (!following[item] && !(channel && el.getAttribute("data-live-on") === channel)) {
        unfollowed = true;
      }
    });
    var feed = document.querySelector("[data-live-feed]");
    if (!items.length && !feed) return stop();
    if (source && source.readyState !== EventSource.CLOSED && !unfollowed) return;
    connect(items, feed ? feed.getAttribute("data-live-feed") : "");
  }

  document.addEventListener("htmx:configRequest", function (event) {
    if (channel) event.detail.headers["X-Live-Channel"] = channel;
  });
  document.addEventListener("htmx:afterSettle", function () {
    retryWaiting();
    sync();
  });
  setInterval(function () {
    if (source && source.readyState === EventSource.OPEN) return;
    if (window.htmx) window.htmx.trigger(document.body, "gs:poll");
    // A stream the server refused (EventSource gives up): try again, less and less often.
    if (source && source.readyState === EventSource.CLOSED && ++closedTicks >= retryIn) {
      closedTicks = 0;
      retryIn = Math.min(retryIn * 2, 16);
      source = null;
      sync();
    }
  }, POLL_MS);
  sync();

  // "Select every row" of the dead letters.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box || box.id !== "select-all") return;
    document.querySelectorAll("#dlq-table input[name=ids]:not(:disabled)").forEach(function (row) {
      row.checked = box.checked;
    });
  });
})();
