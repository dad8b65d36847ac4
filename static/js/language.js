/* The language menu in the top bar: choosing a language submits its form at once.
 * A file rather than an inline onchange: the Content-Security-Policy runs no inline script.
 * Without JavaScript the <noscript> "Change" button submits the form. */
(function () {
  "use strict";
  var select = document.getElementById("language");
  if (!select) return;
  select.addEventListener("change", function () {
    select.form.submit();
  });
})();
