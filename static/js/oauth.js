/* An OAuth provider's sign-in in a popup (Microsoft 365, S5.4; Google, issue 15).
 * On the card: a "Sign in" link (a.oauth-connect) opens the popup; when the popup says it is
 * done (postMessage, same origin only) the card reloads to show the result. Popups blocked or
 * no JavaScript: the link simply opens the sign-in in the page itself.
 * In the popup (the callback page): on success tell the opener and close; on failure stay open
 * with the explanation. */
(function () {
  "use strict";
  var self = document.currentScript;
  var result = self && self.getAttribute("data-popup-result");
  if (result) {
    // Only success closes the popup: a refusal stays on screen so the user can read why (the
    // card shows no message for a popup sign-in, and nothing changed there).
    if (result === "ok" && window.opener && !window.opener.closed) {
      window.opener.postMessage({ type: "oauth", result: result }, window.location.origin);
      window.close();
    }
    return;
  }
  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a.oauth-connect");
    if (!link) return;
    var url = new URL(link.href, window.location.href);
    url.searchParams.set("popup", "1");
    var popup = window.open(url.toString(), "oauth", "width=520,height=680");
    if (!popup) return; // blocked: follow the link in this page
    event.preventDefault();
  });
  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin) return;
    if (!event.data || event.data.type !== "oauth") return;
    window.location.reload();
  });
})();
