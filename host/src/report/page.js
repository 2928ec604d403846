// The review page: reads the data block, fills in the run, the counts, the
// changes since the previous sync and the table of who has what, and
// filters that table as the reviewer types. Every value from the sync file
// goes into the page as text (textContent, option.text, dataset): none of it
// is ever parsed as markup.
(function () {
  "use strict";
  // Grant rows, as the host writes them: arrays, to keep the page small.
  var RT = 0, RID = 1, RNAME = 2, EID = 3, ENAME = 4, PT = 5, PID = 6, PNAME = 7, PEMAIL = 8, REV = 9;
  // Rows drawn at most; the counts always cover every row that matches.
  var MAX_ROWS = 2000, MAX_CHANGES = 2000;

  var data = JSON.parse(document.getElementById("review-data").textContent);
  var grants = data.grants;
  var typeNames = {};
  data.types.forEach(function (t) { typeNames[t.id] = t.display_name; });

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function num(n) { return Number(n).toLocaleString("en-US"); }
  function show(value) { return typeof value === "string" ? value : JSON.stringify(value); }

  // The run.
  var run = data.run;
  document.title = "Access review · " + run.connector_name + " · run " + run.id;
  $("connector-name").textContent = run.connector_name;
  $("run-id").textContent = String(run.id);
  $("run-time").textContent = (run.ended_at || run.started_at) + (run.ended_at ? "" : " (started)");
  $("connector-version").textContent = run.connector_version;
  $("connector-digest").textContent = run.connector_digest;
  $("file-name").textContent = data.file;
  if (data.newer_attempt) {
    var newer = data.newer_attempt;
    var said = $("newer-warning");
    said.textContent = "A newer sync did not succeed: run " + newer.id + " (started " + newer.started_at + ") " + newer.status +
      (newer.error ? ": " + newer.error : "") + ". This page shows the last good run.";
    said.hidden = false;
  }
  if (grants.length !== data.counts.grants) {
    var warning = $("load-warning");
    warning.textContent = "This page holds " + num(grants.length) + " grants but the sync has " + num(data.counts.grants) + ".";
    warning.hidden = false;
  }

  // The counts, as the sync file has them.
  function card(label, value, key) {
    var c = el("div", null, "card");
    c.dataset.count = key;
    c.appendChild(el("div", num(value), "value"));
    c.appendChild(el("div", label, "label"));
    $("counts").appendChild(c);
    return c;
  }
  data.types.forEach(function (t) { card(t.display_name, t.resources, "type").dataset.type = t.id; });
  card("Resources", data.counts.resources, "resources");
  card("Entitlements", data.counts.entitlements, "entitlements");
  card("Grants", data.counts.grants, "grants");

  // What changed since the previous good run: highlighted in the table below too.
  var addedGrants = new Set(), changedResources = new Map();
  if (data.previous) {
    $("diff-title").textContent = "since sync run " + data.previous.id + " (" + (data.previous.ended_at || data.previous.started_at) + ")";
    var dc = $("diff-counts");
    [["resource", "Resources"], ["entitlement", "Entitlements"], ["grant", "Grants"]].forEach(function (k) {
      var tr = el("tr");
      tr.dataset.kind = k[0];
      tr.appendChild(el("td", k[1]));
      data.diff_counts[k[0]].forEach(function (n) { tr.appendChild(el("td", num(n))); });
      dc.tBodies[0].appendChild(tr);
    });
    dc.hidden = false;
    var list = $("diff-list").tBodies[0];
    data.changes.forEach(function (c, i) {
      var change = c[0], kind = c[1], key = c[6];
      if (kind === "grant" && change === "added") addedGrants.add(key);
      if (kind === "resource") changedResources.set(key, change);
      if (i >= MAX_CHANGES) return;
      var tr = el("tr", null, change);
      tr.appendChild(el("td", change));
      tr.appendChild(el("td", kind));
      var name = el("td", c[3]);
      name.appendChild(el("span", c[2], "sub mono"));
      tr.appendChild(name);
      tr.appendChild(el("td", c[4]));
      var details = el("td");
      if (c[5].length) {
        var ul = el("ul", null, "fields");
        c[5].forEach(function (f) { ul.appendChild(el("li", f[0] + ": " + show(f[1]) + " → " + show(f[2]))); });
        details.appendChild(ul);
      }
      tr.appendChild(details);
      list.appendChild(tr);
    });
    if (data.changes.length) $("diff-details").hidden = false;
    // A handful of changes is what a reviewer came for: shown open.
    if (data.changes.length && data.changes.length <= 50) $("diff-details").open = true;
    if (data.changes.length > MAX_CHANGES) {
      $("diff-truncated").textContent = "The first " + num(MAX_CHANGES) + " of " + num(data.changes.length) + " changes; `tether diff` lists them all.";
      $("diff-truncated").hidden = false;
    }
  }
  if (data.diff_note) {
    $("diff-note").textContent = data.diff_note;
    $("diff-note").hidden = false;
  }

  function grantKey(g) { return g[EID] + "\n" + g[PT] + ":" + g[PID]; }
  function resourceKey(g) { return g[RT] + ":" + g[RID]; }
  function entitlementLabel(g) { return (g[RNAME] || g[RID] || "") + " · " + (g[ENAME] || g[EID]); }
  function isChanged(g) { return addedGrants.has(grantKey(g)) || changedResources.has(resourceKey(g)); }

  // Filters: types as the connector declared them; entitlements of the chosen type.
  var typeSelect = $("filter-type"), entSelect = $("filter-entitlement"), search = $("search"), onlyChanges = $("only-changes");
  data.types.forEach(function (t) { typeSelect.add(new Option(t.display_name + " (" + t.id + ")", t.id)); });
  function fillEntitlements() {
    var keep = entSelect.value, seen = new Map();
    grants.forEach(function (g) {
      if ((!typeSelect.value || g[RT] === typeSelect.value) && !seen.has(g[EID])) seen.set(g[EID], entitlementLabel(g));
    });
    entSelect.length = 1;
    seen.forEach(function (label, id) { entSelect.add(new Option(label, id)); });
    entSelect.value = seen.has(keep) ? keep : "";
  }

  // Lower-cased text of each row, made once, for the search.
  var haystacks = grants.map(function (g) {
    return [g[RNAME], g[RID], g[ENAME], g[EID], g[PNAME], g[PID], g[PEMAIL], typeNames[g[RT]] || g[RT]].join("\u0001").toLowerCase();
  });

  var body = $("grants").tBodies[0];
  function render() {
    var type = typeSelect.value, ent = entSelect.value, terms = search.value.toLowerCase().split(/\s+/).filter(Boolean), changes = onlyChanges.checked;
    var matching = [], perResource = new Map();
    for (var i = 0; i < grants.length; i++) {
      var g = grants[i];
      if (type && g[RT] !== type) continue;
      if (ent && g[EID] !== ent) continue;
      if (changes && !isChanged(g)) continue;
      var hay = haystacks[i], all = true;
      for (var t = 0; t < terms.length && all; t++) all = hay.indexOf(terms[t]) !== -1;
      if (!all) continue;
      matching.push(i);
      var rk = resourceKey(g);
      perResource.set(rk, (perResource.get(rk) || 0) + 1);
    }
    var rows = document.createDocumentFragment(), shown = Math.min(matching.length, MAX_ROWS), group = null;
    for (var j = 0; j < shown; j++) {
      var g = grants[matching[j]], key = resourceKey(g);
      if (key !== group) {
        group = key;
        var header = el("tr", null, "group");
        var td = el("td");
        td.colSpan = 4;
        td.appendChild(el("span", typeNames[g[RT]] || g[RT], "type"));
        td.appendChild(document.createTextNode(g[RNAME] || g[RID] || "(unknown resource)"));
        var change = changedResources.get(key);
        if (change) td.appendChild(el("span", change === "added" ? "new" : change, "badge " + change));
        var inGroup = perResource.get(key);
        td.appendChild(el("span", num(inGroup) + (inGroup === 1 ? " grant" : " grants"), "n"));
        header.appendChild(td);
        rows.appendChild(header);
      }
      var added = addedGrants.has(grantKey(g));
      var tr = el("tr", null, added ? "grant added" : "grant");
      var entCell = el("td", g[ENAME] || g[EID]);
      entCell.title = g[EID];
      tr.appendChild(entCell);
      var who = el("td", g[PNAME] || g[PID]);
      if (added) who.appendChild(el("span", "new", "badge added"));
      who.appendChild(el("span", g[PT] + ":" + g[PID], "sub mono"));
      tr.appendChild(who);
      tr.appendChild(el("td", g[PEMAIL] || ""));
      tr.appendChild(el("td", g[REV] ? "yes" : "no"));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    var count = $("shown-count");
    count.dataset.matching = String(matching.length);
    count.textContent = num(matching.length) + " of " + num(grants.length) + " grants match";
    var cut = $("grants-truncated");
    cut.hidden = matching.length <= MAX_ROWS;
    cut.textContent = "Showing the first " + num(MAX_ROWS) + "; narrow the search or the filters to see the rest.";
    document.body.dataset.query = search.value;
  }

  // Filtering a big sync takes a moment: typing waits for a pause.
  var pending = null;
  function later() {
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () { pending = null; render(); }, grants.length > 20000 ? 200 : 30);
  }
  typeSelect.addEventListener("change", function () { fillEntitlements(); render(); });
  entSelect.addEventListener("change", render);
  onlyChanges.addEventListener("change", render);
  search.addEventListener("input", later);
  $("filters").addEventListener("submit", function (e) { e.preventDefault(); render(); });

  fillEntitlements();
  render();
  document.body.dataset.ready = "1";
})();
