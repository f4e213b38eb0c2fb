// ATCR web UI: progressive enhancement only. Pages work without it; with
// it, badges still "checking" update in place and pull commands copy.
"use strict";
(function () {
  function safeUrl(u) {
    return typeof u === "string" && /^https?:\/\//.test(u) ? u : null;
  }
  function text(tag, s, cls) {
    var el = document.createElement(tag);
    el.textContent = s;
    if (cls) el.className = cls;
    return el;
  }
  // Rebuilds the signer list beside a badge from the API's answer (text
  // nodes only: nothing from the answer is parsed as HTML).
  function signers(badge, v) {
    var scope = badge.closest("[data-verification]") || badge.parentNode;
    var box = scope.querySelector("[data-signers]");
    if (!box) return;
    box.textContent = "";
    if (v.state === "failed" && v.detail) box.appendChild(text("p", v.detail, "detail"));
    if (!v.signers || !v.signers.length) return;
    var ul = document.createElement("ul");
    ul.className = "signer-list";
    v.signers.forEach(function (s) {
      var li = document.createElement("li");
      li.appendChild(text("span", s.kind === "owner" ? "owner" : "co-signer", "kind"));
      li.appendChild(document.createTextNode(" "));
      var who = document.createElement("a");
      who.href = "/u/" + encodeURIComponent(s.handle || s.did);
      who.textContent = s.handle || s.did;
      li.appendChild(who);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(s.valid ? text("span", "valid", "ok")
        : text("span", "invalid" + (s.reason ? ": " + s.reason.replace(/_/g, " ") : ""), "bad"));
      if (s.recordUri) {
        li.appendChild(document.createElement("br"));
        li.appendChild(text("code", s.recordUri, "uri"));
      }
      var url = safeUrl(s.recordUrl);
      if (url) {
        li.appendChild(document.createTextNode(" "));
        var a = document.createElement("a");
        a.href = url;
        a.textContent = "record at the PDS";
        li.appendChild(a);
      }
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }
  function poll(el, tries) {
    var api = el.getAttribute("data-badge-api");
    if (!api || tries > 60) return;
    setTimeout(function () {
      fetch(api, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j || !j.verification) return;
          var v = j.verification;
          if (v.state === "checking") { poll(el, tries + 1); return; }
          el.textContent = j.label;
          el.className = "badge badge-" + v.state;
          el.removeAttribute("data-badge-api");
          signers(el, v);
        })
        .catch(function () { poll(el, tries + 1); });
    }, tries === 0 ? 250 : 1000);
  }
  document.querySelectorAll("[data-badge-api]").forEach(function (el) { poll(el, 0); });
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var value = b.getAttribute("data-copy");
      var done = function () { b.textContent = "Copied"; };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(value).then(done, function () {});
      }
    });
  });
})();
