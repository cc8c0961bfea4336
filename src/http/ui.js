// The operator page's live updates: one EventSource on /admin/ui/stream; each change re-fetches only
// what it touches (an instance's row, the journal panels, the instance timeline), batched per second.
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-page");
  var instance = body.getAttribute("data-instance");
  var query = location.search;
  var rows = {};
  var panels = false;
  var timer = null;
  var ROWS_PER_BATCH = 10;
  var status = document.getElementById("live");

  function get(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" });
  }

  function replaceRow(id, html) {
    var old = document.getElementById("inst-" + id);
    if (!html) {
      if (old) old.remove();
      return;
    }
    var holder = document.createElement("tbody");
    holder.innerHTML = html;
    var row = holder.firstElementChild;
    if (!row) return;
    row.classList.add("changed");
    if (old) {
      old.replaceWith(row);
    } else {
      var table = document.querySelector("#instances tbody");
      if (table) table.appendChild(row);
    }
  }

  function flush() {
    timer = null;
    // A burst (a resync, a rollout) is fetched a few rows at a time: each row is one PocketBase read.
    var ids = Object.keys(rows).slice(0, ROWS_PER_BATCH);
    ids.forEach(function (id) { delete rows[id]; });
    if (Object.keys(rows).length) later();
    ids.forEach(function (id) {
      get("/admin/ui/instances/" + encodeURIComponent(id) + "/row" + query).then(function (r) {
        if (r.status === 204) return "";
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html !== null) replaceRow(id, html);
      });
    });
    if (panels) {
      panels = false;
      var url = page === "instance"
        ? "/admin/ui/instances/" + encodeURIComponent(instance) + "?fragment=1"
        : "/admin/ui/panels" + query;
      var target = document.getElementById(page === "instance" ? "timeline-box" : "panels");
      get(url).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
        if (html !== null && target) target.innerHTML = html;
      });
    }
  }

  function later() {
    if (!timer) timer = setTimeout(flush, 700);
  }

  function onChange(msg) {
    var c;
    try { c = JSON.parse(msg.data); } catch (e) { return; }
    if (page === "instance") {
      if (c.record_id === instance) { panels = true; later(); }
      return;
    }
    if (c.kind === "health" || c.collection === "bot_instances") rows[c.record_id] = true;
    panels = true;
    later();
  }

  var source = new EventSource("/admin/ui/stream");
  source.addEventListener("change", onChange);
  source.addEventListener("lagged", function () {
    document.querySelectorAll("#instances tbody tr[id^='inst-']").forEach(function (tr) {
      rows[tr.id.slice(5)] = true;
    });
    panels = true;
    later();
  });
  source.addEventListener("hello", function () {
    if (status) { status.textContent = "live"; status.className = "running"; }
  });
  source.onerror = function () {
    if (status) { status.textContent = "reconnecting"; status.className = "pending"; }
  };
})();
