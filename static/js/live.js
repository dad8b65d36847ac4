/* A page followed live without reloading (issue 12, item 9): the message page and the mail
 * catcher. The element with data-live-url names a small JSON status ({"version", "final"});
 * it is polled every 2 s, and when its version moves the page's [data-live][id] parts are
 * swapped for fresh ones fetched from this same page (as progress.js does for a job).
 * Polling stops once the status says "final". Without JavaScript a plain reload link serves. */
(function () {
  "use strict";
  var box = document.querySelector("[data-live-url]");
  if (!box) return;
  var url = box.getAttribute("data-live-url");
  var version = box.getAttribute("data-live-version");

  function refreshLiveParts() {
    return fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : Promise.reject(response.status);
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (element) {
          var replacement = fresh.getElementById(element.id);
          if (replacement) element.replaceWith(document.importNode(replacement, true));
        });
      });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : Promise.reject(response.status);
      })
      .then(function (status) {
        var moved = status.version !== version;
        version = status.version;
        var next = moved ? refreshLiveParts() : Promise.resolve();
        return next.then(function () {
          if (!status.final) window.setTimeout(poll, 2000);
        });
      })
      .catch(function () {
        window.setTimeout(poll, 5000); // a network hiccup: keep following, a little slower
      });
  }

  if (box.getAttribute("data-live-final") !== "true") window.setTimeout(poll, 2000);
})();
