"""The report page's style and scripts, inlined into report.html (the page's CSP allows exactly these by hash).

ERRORS runs first, in <head>: it writes every script error, failed resource load and CSP violation into
#report-errors (and counts them in <html data-errors>), so a browser test and a reader both see them.
GALLERY renders one page of cards at a time from the JSON blob; the filter state lives in the URL hash
(`#split=train&label=happy&page=2`), so a filtered view can be linked and reloaded.
"""

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #dadce0; --bg: #fff; --soft: #f6f7f9; --accent: #3b5bdb; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans CJK SC", sans-serif; color: var(--fg); background: var(--bg); }
header.top { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line); }
header.top div { max-width: 1240px; margin: 0 auto; padding: 8px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
header.top h1 { font-size: 18px; margin: 0; }
header.top nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 20px 40px; }
h2 { font-size: 17px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.muted { color: var(--muted); }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.tile { background: var(--soft); border-radius: 8px; padding: 8px 12px; }
.tile b { display: block; font-size: 20px; font-weight: 600; overflow-wrap: anywhere; }
.tile span { color: var(--muted); font-size: 12px; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 0 28px; }
table { border-collapse: collapse; margin: 4px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.paths { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
meter { width: 120px; }
details pre { background: var(--soft); padding: 8px; overflow: auto; max-height: 360px; font-size: 12px; }
code { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
.note { background: #fff8e1; border-left: 3px solid #f0b400; padding: 6px 10px; margin: 8px 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 16px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { font-size: 12px; color: var(--muted); }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: end; background: var(--soft); padding: 8px 12px; border-radius: 8px; position: sticky; top: 42px; z-index: 1; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
form.filters select, form.filters input { font: inherit; padding: 2px 4px; min-width: 120px; }
.pager { display: flex; gap: 8px; align-items: center; margin: 8px 0; }
.pager button { font: inherit; padding: 2px 10px; }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; min-width: 0; }
.card.failure { border-color: var(--bad); background: #fdf3f2; }
.card h3 { margin: 0; font-size: 14px; overflow-wrap: anywhere; }
.card .head { display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.badge { font-size: 11px; border-radius: 10px; padding: 0 7px; background: var(--soft); border: 1px solid var(--line); }
.badge.fail { color: var(--bad); border-color: var(--bad); }
.strip { display: block; height: 72px; max-width: 100%; object-fit: cover; object-position: left; margin: 6px 0; border-radius: 4px; }
audio { width: 100%; height: 32px; margin: 4px 0; }
.card dl { margin: 4px 0 0; }
.card dt { font-size: 12px; color: var(--muted); margin-top: 5px; }
.card dd { margin: 0; overflow-wrap: anywhere; }
.src { font-size: 11px; color: var(--accent); margin-left: 4px; }
.null { color: var(--muted); font-style: italic; }
.chip { display: inline-block; background: #e8eefc; border-radius: 10px; padding: 0 8px; margin: 1px 3px 1px 0; }
#report-errors { color: var(--bad); white-space: pre-wrap; }
"""

ERRORS = """
(function () {
  "use strict";
  var seen = [];
  function show() {
    var box = document.getElementById("report-errors");
    document.documentElement.setAttribute("data-errors", String(seen.length));
    if (box) { box.textContent = seen.join("\\n"); box.hidden = seen.length === 0; }
  }
  function note(message) { seen.push(message); show(); }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { note("failed to load " + (t.src || t.href)); }
    else { note("script error: " + (e.message || "unknown") + (e.lineno ? " (line " + e.lineno + ")" : "")); }
  }, true);
  window.addEventListener("unhandledrejection", function (e) { note("unhandled rejection: " + (e.reason && e.reason.message || e.reason)); });
  document.addEventListener("securitypolicyviolation", function (e) { note("blocked by the page's policy: " + e.violatedDirective + " " + e.blockedURI); });
  document.addEventListener("DOMContentLoaded", show);
  window.addEventListener("load", function () {
    document.documentElement.setAttribute("data-load-ms", String(Math.round(performance.now())));
  });
})();
"""

GALLERY = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var items = data.items, size = data.page_size;
  var form = document.getElementById("filters"), cards = document.getElementById("cards");
  var status = document.getElementById("gallery-status");
  var fields = ["split", "label", "lang", "source", "status", "q"];
  var page = 1;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function options(select, values, labels) {
    values.forEach(function (v) { var o = el("option", null, labels ? labels[v] : v); o.value = v; select.appendChild(o); });
  }
  options(form.elements.split, data.filters.split);
  options(form.elements.lang, data.filters.lang);
  options(form.elements.source, data.filters.source);
  options(form.elements.status, data.filters.status.map(function (s) { return s[0]; }),
          data.filters.status.reduce(function (m, s) { m[s[0]] = s[1]; return m; }, {}));
  var list = document.getElementById("label-list");
  data.filters.label.forEach(function (l) { var o = el("option"); o.value = l; list.appendChild(o); });

  function filters() {
    var f = {};
    fields.forEach(function (n) { f[n] = form.elements[n].value.trim(); });
    f.label = f.label.toLowerCase();
    f.q = f.q.toLowerCase();
    return f;
  }
  function matches(it, f) {
    var failed = it.kind === "failure";
    if (f.status === "records" && failed) { return false; }
    if (f.status === "incomplete" && (failed || !it.miss.length)) { return false; }
    if (f.status === "failures" && !failed) { return false; }
    if (f.status.indexOf("failed:") === 0 && (!failed || "failed:" + it.stage !== f.status)) { return false; }
    if (f.q && (it.key + " " + it.path).toLowerCase().indexOf(f.q) < 0) { return false; }
    if (failed) { return !(f.split || f.label || f.lang || f.source); }
    if (f.split && it.split !== f.split) { return false; }
    if (f.lang && it.lang !== f.lang) { return false; }
    if (f.source && it.sources.indexOf(f.source) < 0) { return false; }
    if (f.label && it.find.indexOf(f.label) < 0) { return false; }
    return true;
  }
  function source(dt, src, lang) {
    if (src) { dt.appendChild(el("span", "src", src + (lang ? " · " + lang : ""))); }
  }
  function text(dd, value, reason) {
    if (value) { dd.textContent = value; } else { dd.appendChild(el("span", "null", "null" + (reason ? ": " + reason : ""))); }
  }
  function recordCard(it) {
    var card = el("article", "card record");
    card.setAttribute("data-key", it.key);
    card.setAttribute("data-split", it.split);
    var head = el("div", "head");
    head.appendChild(el("h3", null, it.key));
    head.appendChild(el("span", "badge", it.split));
    head.appendChild(el("span", "muted", it.path + (it.dur !== null ? " · " + it.dur + " s" : "") + (it.lang ? " · " + it.lang : "")));
    card.appendChild(head);
    if (it.strip) {
      var img = el("img", "strip");
      img.alt = it.shown + " of " + it.crops + " face crops of " + it.key;
      img.title = img.alt;
      img.width = 72 * it.shown; img.height = 72;
      img.addEventListener("load", function () { img.setAttribute("data-loaded", "1"); });
      img.src = it.strip;
      card.appendChild(img);
    } else {
      card.appendChild(el("p", "null", it.crops ? "face crops not readable" : "no face crops" + (it.face_reason ? ": " + it.face_reason : "")));
    }
    if (it.audio) {
      var audio = el("audio"); audio.controls = true; audio.preload = "none"; audio.src = it.audio;
      card.appendChild(audio);
    } else {
      card.appendChild(el("p", "null", "no audio" + (it.audio_reason ? ": " + it.audio_reason : "")));
    }
    var dl = el("dl"), dt, dd;
    dt = el("dt", null, "transcript"); source(dt, it.asr, it.lang); dl.appendChild(dt);
    dd = el("dd"); text(dd, it.transcript, it.transcript_reason); dl.appendChild(dd);
    if (it.subtitle) {
      dt = el("dt", null, "subtitle"); source(dt, it.subtitle[1], it.subtitle[2]); dl.appendChild(dt);
      dd = el("dd"); text(dd, it.subtitle[0], null); dl.appendChild(dd);
    }
    it.clues.forEach(function (c) {
      dt = el("dt", null, c[0]); source(dt, c[2], c[3]); dl.appendChild(dt);
      dd = el("dd"); text(dd, c[1], c[4]); dl.appendChild(dd);
    });
    dt = el("dt", null, "labels"); source(dt, it.labels_source, null); dl.appendChild(dt);
    dd = el("dd", "labels");
    if (it.labels.length) { it.labels.forEach(function (l) { dd.appendChild(el("span", "chip", l)); }); }
    else { dd.appendChild(el("span", "null", "no open-vocabulary labels" + (it.labels_reason ? ": " + it.labels_reason : ""))); }
    if (it.normalised) { dd.appendChild(el("span", "muted", " · normalised: " + (it.normalised.join(", ") || "none"))); }
    if (it.discrete) { dd.appendChild(el("span", "muted", " · discrete: " + it.discrete)); }
    if (it.valence !== null) { dd.appendChild(el("span", "muted", " · valence: " + it.valence)); }
    dl.appendChild(dd);
    if (it.miss.length) {
      dt = el("dt", null, "missing"); dl.appendChild(dt);
      dd = el("dd", "null", it.miss.join("; ")); dl.appendChild(dd);
    }
    card.appendChild(dl);
    return card;
  }
  function failureCard(it) {
    var card = el("article", "card failure");
    card.setAttribute("data-key", it.key);
    var head = el("div", "head");
    head.appendChild(el("h3", null, it.key));
    head.appendChild(el("span", "badge fail", "failed at " + it.stage));
    card.appendChild(head);
    card.appendChild(el("p", "muted", it.path));
    var p = el("p"); p.appendChild(el("b", null, it.error + ": ")); p.appendChild(document.createTextNode(it.message));
    card.appendChild(p);
    return card;
  }
  function readHash() {
    var params = new URLSearchParams(location.hash.replace(/^#/, ""));
    fields.forEach(function (n) { form.elements[n].value = params.get(n) || ""; });
    page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  }
  function writeHash(f) {
    var params = new URLSearchParams();
    fields.forEach(function (n) { var v = form.elements[n].value.trim(); if (v) { params.set(n, v); } });
    if (page > 1) { params.set("page", String(page)); }
    var h = params.toString();
    try { history.replaceState(null, "", h ? "#" + h : location.pathname + location.search); } catch (e) { /* some viewers forbid it */ }
  }
  function render() {
    var f = filters();
    var shown = items.filter(function (it) { return matches(it, f); });
    var pages = Math.max(1, Math.ceil(shown.length / size));
    page = Math.min(page, pages);
    var first = (page - 1) * size, slice = shown.slice(first, first + size);
    var frag = document.createDocumentFragment();
    slice.forEach(function (it) { frag.appendChild(it.kind === "failure" ? failureCard(it) : recordCard(it)); });
    cards.replaceChildren(frag);
    var records = shown.filter(function (it) { return it.kind !== "failure"; }).length;
    status.textContent = shown.length
      ? "showing " + (first + 1) + "-" + (first + slice.length) + " of " + shown.length + " (" + records + " records, " + (shown.length - records) + " failures), page " + page + " of " + pages
      : "nothing matches these filters";
    status.setAttribute("data-matching", String(shown.length));
    status.setAttribute("data-page", String(page));
    document.querySelectorAll(".pager .pages").forEach(function (s) { s.textContent = page + " / " + pages; });
    document.querySelectorAll(".pager .prev").forEach(function (b) { b.disabled = page <= 1; });
    document.querySelectorAll(".pager .next").forEach(function (b) { b.disabled = page >= pages; });
    writeHash(f);
  }
  form.addEventListener("input", function () { page = 1; render(); });
  form.addEventListener("submit", function (e) { e.preventDefault(); });
  document.querySelectorAll(".pager .prev").forEach(function (b) { b.addEventListener("click", function () { page -= 1; render(); }); });
  document.querySelectorAll(".pager .next").forEach(function (b) { b.addEventListener("click", function () { page += 1; render(); }); });
  window.addEventListener("hashchange", function () { readHash(); render(); });
  readHash();
  render();
  document.documentElement.setAttribute("data-render-ms", String(Math.round(performance.now())));
})();
"""
