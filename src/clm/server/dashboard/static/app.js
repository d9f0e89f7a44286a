// clm dashboard: the model editor checks the draft as you type and previews it.
// Plain browser JavaScript, served by clm itself; no libraries, works offline.
"use strict";
(function () {
  const area = document.getElementById("model-yaml");
  if (!area) return;
  const status = document.getElementById("validation");
  const words = JSON.parse(document.getElementById("editor-words").textContent);
  let timer = null;

  async function post(action) {
    const r = await fetch("/api/v1/models/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ yaml: area.value }),
      credentials: "same-origin",
    });
    return r.json();
  }

  function show(result) {
    if (result.error) {
      status.className = "error";
      status.textContent = result.error.message;
      return false;
    }
    if (result.valid) {
      status.className = "ok";
      status.textContent = words.valid;
      return true;
    }
    const e = result.errors[0];
    status.className = "error";
    status.textContent = (e.line ? words.line.replace("{line}", e.line) + ": " : "") + e.message;
    if (e.line) {
      // Select the offending line so the error points at it in the text.
      const lines = area.value.split("\n");
      const start = lines.slice(0, e.line - 1).join("\n").length + (e.line > 1 ? 1 : 0);
      area.setSelectionRange(start, start + (lines[e.line - 1] || "").length);
    }
    return false;
  }

  area.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(async function () { show(await post("validate")); }, 300);
  });

  const lang = document.documentElement.lang;
  function day(iso) {
    if (!iso) return "";
    const when = new Date(iso + "T00:00:00Z");
    return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeZone: "UTC" }).format(when);
  }

  document.getElementById("preview-button").addEventListener("click", async function () {
    const note = document.getElementById("preview-note");
    note.textContent = words.previewing;
    const result = await post("preview");
    const body = document.querySelector("#preview tbody");
    body.textContent = "";
    note.textContent = "";
    if (!show(result)) return;
    for (const row of result.populations) {
      const tr = document.createElement("tr");
      const a = document.createElement("td");
      const b = document.createElement("td");
      const c = document.createElement("td");
      a.textContent = row.stage;
      b.textContent = row.customers.toLocaleString(lang);
      b.className = "num";
      // A margin only for an estimate; stored and exact figures have none.
      c.textContent = result.estimate ? "± " + row.margin.toLocaleString(lang) : "";
      c.className = "num";
      tr.append(a, b, c);
      body.append(tr);
    }
    // The method decides the note: stored (exact), sample (estimate) or exact.
    const text = words[result.method] || words.sample;
    note.textContent = text
      .replace("{as_of}", day(result.as_of))
      .replace("{sample}", (result.sample_customers || 0).toLocaleString(lang))
      .replace("{total}", (result.customers || 0).toLocaleString(lang));
  });
})();
