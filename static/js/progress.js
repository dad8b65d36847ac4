/* A bulk job's page followed live (S1.2): polls the job's progress JSON every second and
 * updates the <progress> bar and the counts in place, without reloading the page. When the
 * counts move (at most every 3 s) or the job stops, the rows and the Cancel/Resume buttons
 * ([data-live] elements) are swapped for fresh ones fetched from this same page.
 * Without JavaScript the page refreshes itself (<noscript><meta refresh>) while the job runs
 * (or a cancelled job's last message is still in flight).
 * Closing the page changes nothing: the worker sends the job, not this script. */
(function () {
  "use strict";
  var box = document.querySelector("[data-progress-url]");
  if (!box) return;
  var url = box.getAttribute("data-progress-url");
  var bar = box.querySelector("progress");
  var number = new Intl.NumberFormat(document.documentElement.lang || undefined, {
    maximumFractionDigits: 1,
  });
  var state = box.getAttribute("data-state");
  var done = Number(box.getAttribute("data-done"));
  var refreshedAt = 0;

  function duration(total) {
    // "1:05:09", "5:09", "0:09", as invoices.views.duration renders it; "—" before the
    // first mail (no rate yet: null).
    if (total === null || total === undefined) return "\u2014";
    total = Math.max(0, Math.round(total));
    var hours = Math.floor(total / 3600);
    var minutes = Math.floor((total % 3600) / 60);
    var seconds = String(total % 60).padStart(2, "0");
    return hours ? hours + ":" + String(minutes).padStart(2, "0") + ":" + seconds : minutes + ":" + seconds;
  }

  function show(field, text) {
    box.querySelectorAll('[data-field="' + field + '"]').forEach(function (element) {
      element.textContent = text;
    });
  }

  function render(progress) {
    bar.value = progress.percent;
    bar.textContent = number.format(progress.percent) + " %";
    ["percent", "sent", "total", "failed", "cancelled", "remaining", "rate"].forEach(function (f) {
      show(f, number.format(progress[f]));
    });
    show("seconds_left", duration(progress.seconds_left));
    var label = box.querySelector('[data-field="state"]');
    label.textContent = label.getAttribute("data-label-" + progress.state) || progress.state;
    box.setAttribute("data-state", progress.state);
  }

  function refreshLiveParts() {
    refreshedAt = Date.now();
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : Promise.reject(response.status);
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (element) {
          var replacement = fresh.getElementById(element.id);
          if (replacement) element.replaceWith(document.importNode(replacement, true));
        });
      })
      .catch(function () {}); // the next change tries again
  }

  function following(progress) {
    // A cancelled job may still have its message in flight: follow it until it settles.
    return progress.state === "running" || progress.remaining > 0;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(response.status);
      })
      .then(function (progress) {
        render(progress);
        var nowDone = progress.sent + progress.failed + progress.cancelled;
        var moved = nowDone !== done && (Date.now() - refreshedAt > 3000 || !following(progress));
        if (progress.state !== state || moved) refreshLiveParts();
        state = progress.state;
        done = nowDone;
        if (following(progress)) window.setTimeout(poll, 1000);
      })
      .catch(function () {
        window.setTimeout(poll, 3000); // a network hiccup: keep following, a little slower
      });
  }

  if (state === "running" || Number(box.getAttribute("data-remaining"))) {
    window.setTimeout(poll, 1000);
  }
})();
