// metaprompt web console: the one script. It makes a running run's page follow the run:
// on every progress event of the run's server-sent events it fetches the server-rendered
// fragment /runs/ID/live (at most twice a second) and puts it in place. On the agent's page
// it fetches the pass's fragment /agent/live (every 2 s while a pass runs, every 15 s
// otherwise) and reloads the page once a pass ends, for the cases it changed. No
// dependencies, nothing from another host; every page works without it.
(function () {
  "use strict";
  var pass = document.getElementById("agent-pass");
  if (!pass || !window.fetch) {
    return;
  }
  function running() {
    return pass.getAttribute("data-running") === "true";
  }
  function poll() {
    fetch("/agent/live", { credentials: "same-origin" })
      .then(function (r) {
        // Signed out meanwhile: the sign-in page is not the fragment.
        return r.ok && !r.redirected ? r.text() : Promise.reject(r.status);
      })
      .then(function (html) {
        var was = running();
        pass.innerHTML = html;
        var state = pass.querySelector("[data-running]");
        var now = !!state && state.getAttribute("data-running") === "true";
        pass.setAttribute("data-running", now ? "true" : "false");
        if (was && !now) {
          location.reload();
          return;
        }
        setTimeout(poll, now ? 2000 : 15000);
      })
      .catch(function () {});
  }
  setTimeout(poll, running() ? 2000 : 15000);
})();
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || live.getAttribute("data-status") !== "running" || !window.EventSource) {
    return;
  }
  var base = "/runs/" + encodeURIComponent(live.getAttribute("data-run"));
  var timer = null;
  var last = 0;
  var updates = 0;
  function refresh() {
    timer = null;
    last = Date.now();
    fetch(base + "/live", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        live.innerHTML = html;
        updates += 1;
        live.setAttribute("data-updates", String(updates));
      })
      .catch(function () {});
  }
  function soon() {
    if (timer === null) {
      timer = setTimeout(refresh, Math.max(0, 500 - (Date.now() - last)));
    }
  }
  var events = new EventSource(base + "/events");
  events.addEventListener("progress", soon);
  events.addEventListener("end", function () {
    events.close();
    live.setAttribute("data-status", "ended");
    var form = document.querySelector("form.inline");
    if (form) { form.remove(); }
    refresh();
  });
})();
