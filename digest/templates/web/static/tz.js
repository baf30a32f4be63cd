// Optional: pre-fill the time zone field with the browser's zone. The form works without it (UTC).
(function () {
  "use strict";
  var zone;
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  } catch (e) {
    return;
  }
  if (!zone) {
    return;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var fields = document.querySelectorAll('input[name="tz"][data-prefill="yes"]');
    for (var i = 0; i < fields.length; i++) {
      fields[i].value = zone;
    }
  });
})();
