// biomem status page: refresh the sections in place, without reloading the page.
// The server renders (and escapes) every section; this only swaps them in.
(function () {
  "use strict";
  var root = document.documentElement;
  var pollMs = Math.max(1000, Number(root.getAttribute("data-poll-ms")) || 5000);
  var live = document.getElementById("live");
  // A token given in the address (?token=) is sent back as a header, never put in the page.
  var token = new URLSearchParams(window.location.search).get("token");
  var headers = { Accept: "application/json" };
  if (token) {
    headers.Authorization = "Bearer " + token;
  }
  var failures = 0;

  function show(text, state) {
    live.textContent = text;
    live.className = "live " + state;
  }

  function apply(body) {
    var sections = body.sections || {};
    Object.keys(sections).forEach(function (id) {
      var element = document.getElementById(id);
      if (element) {
        element.innerHTML = sections[id];
      }
    });
    root.setAttribute("data-wire", body.status);
    document.title = "biomem: " + body.status;
    show("live · updated " + new Date().toLocaleTimeString(), "ok");
  }

  function tick() {
    fetch("status/data", { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (body) {
        failures = 0;
        apply(body);
      })
      .catch(function (error) {
        failures += 1;
        show("not updated: " + error.message + " (retrying)", "lost");
      })
      .then(function () {
        // Back off while the server does not answer, up to 30 s between tries.
        window.setTimeout(tick, Math.min(30000, pollMs * Math.pow(2, Math.min(failures, 5))));
      });
  }

  show("live · refreshes every " + Math.round(pollMs / 100) / 10 + " s", "ok");
  window.setTimeout(tick, pollMs);
})();
