// The managers' PACS page (pacs/templates/pacs/pacs.html): sources, a QIDO-RS search, picking studies, the
// import's progress (polled from the import, which mirrors its job) and the store-back sends. Talks to the
// PACS API only (pacs/api/); errors are the API's messages, shown as they come.
const root = document.getElementById("pacs");
const slug = root.dataset.slug;
const api = `/api/projects/${encodeURIComponent(slug)}/pacs`;
const $ = (sel) => document.querySelector(sel);

function say(text, kind = "") {
  const el = $("#message");
  el.textContent = text;
  el.className = kind;
}

async function call(method, url, body) {
  const init = { method, headers: { Accept: "application/json", "X-CSRFToken": root.dataset.csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.detail) || `HTTP ${res.status}`);
  return data;
}

function cell(tr, text, cls = "") {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

let sources = [];

async function loadSources() {
  sources = (await call("GET", `${api}/sources/`)).results ?? [];
  const body = $("#sources tbody");
  body.replaceChildren();
  const select = $("#source-select");
  select.replaceChildren();
  for (const s of sources) {
    const tr = document.createElement("tr");
    cell(tr, s.name);
    cell(tr, s.base_url);
    cell(tr, s.auth + (s.has_credentials ? " (set)" : ""));
    cell(tr, s.verify_tls ? "yes" : "no");
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = s.store_back;
    toggle.disabled = root.dataset.identityMap !== "1";
    toggle.addEventListener("change", () => patchSource(s, { store_back: toggle.checked }));
    cell(tr, "").appendChild(toggle);
    cell(tr, s.check_message, s.check_ok === false ? "failed" : "");
    const check = document.createElement("button");
    check.textContent = "Check";
    check.addEventListener("click", () => checkSource(s));
    cell(tr, "").appendChild(check);
    body.appendChild(tr);
    const option = document.createElement("option");
    option.value = s.id;
    option.textContent = s.name;
    select.appendChild(option);
  }
}

async function patchSource(s, changes) {
  try {
    await call("PATCH", `${api}/sources/${s.id}/`, changes);
    say(`Source ${s.name} saved.`, "ok");
  } catch (e) {
    say(e.message, "error");
  }
  await loadSources();
}

async function checkSource(s) {
  say(`Checking ${s.name}…`);
  try {
    const checked = await call("POST", `${api}/sources/${s.id}/check/`);
    say(`${s.name}: ${checked.check_message}`, checked.check_ok ? "ok" : "error");
  } catch (e) {
    say(e.message, "error");
  }
}

$("#source-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { name: form.get("name"), base_url: form.get("base_url"), auth: form.get("auth"), verify_tls: form.get("verify_tls") === "on" };
  if (body.auth === "basic") Object.assign(body, { username: form.get("username"), password: form.get("password") });
  if (body.auth === "bearer") body.token = form.get("token");
  say("Checking the source…");
  try {
    const made = await call("POST", `${api}/sources/`, body);
    say(`Source ${made.name} answers and is saved.`, "ok");
    event.target.reset();
    showAuthFields("none");
    await loadSources();
  } catch (e) {
    say(e.message, "error");
  }
});

$("#search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const source = form.get("source");
  if (!source) return say("Add a source first.", "error");
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (k !== "source" && v) params.set(k, String(v));
  say("Searching…");
  try {
    const studies = await call("GET", `${api}/sources/${source}/studies/?${params}`);
    showStudies(studies);
    say(`${studies.length} stud${studies.length === 1 ? "y" : "ies"} found.`, "ok");
  } catch (e) {
    say(e.message, "error");
  }
});

function showStudies(studies) {
  const body = $("#studies tbody");
  body.replaceChildren();
  for (const st of studies) {
    const tr = document.createElement("tr");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = st.study_uid;
    box.className = "pick";
    box.addEventListener("change", updateImportButton);
    cell(tr, "").appendChild(box);
    cell(tr, `${st.patient_name} (${st.patient_id})`);
    cell(tr, st.accession);
    cell(tr, st.study_date);
    cell(tr, (st.modalities || []).join(", "));
    cell(tr, st.description);
    cell(tr, st.series);
    cell(tr, st.instances);
    body.appendChild(tr);
  }
  updateImportButton();
}

function picked() {
  return [...document.querySelectorAll("#studies .pick:checked")].map((b) => b.value);
}

function updateImportButton() {
  const n = picked().length;
  $("#import").disabled = n === 0;
  $("#import").textContent = n ? `Import ${n} picked stud${n === 1 ? "y" : "ies"}` : "Import picked studies";
}

$("#pick-all").addEventListener("change", (event) => {
  for (const box of document.querySelectorAll("#studies .pick")) box.checked = event.target.checked;
  updateImportButton();
});

$("#import").addEventListener("click", async () => {
  const source = Number($("#source-select").value);
  try {
    const made = await call("POST", `${api}/imports/`, { source, study_uids: picked(), modality: $("#import-modality").value });
    say(`Import #${made.id} started.`, "ok");
    follow(made.id);
  } catch (e) {
    say(e.message, "error");
  }
});

async function follow(id) {
  $("#current").hidden = false;
  for (;;) {
    let imp;
    try {
      imp = await call("GET", `${api}/imports/${id}/`);
    } catch (e) {
      say(e.message, "error");
      return;
    }
    $("#progress").value = imp.progress;
    $("#progress-text").textContent = `#${imp.id} ${imp.status}: ${imp.message}`;
    root.dataset.importStatus = imp.status;
    if (imp.status === "succeeded" || imp.status === "failed") {
      say(`Import #${imp.id} ${imp.status}: ${imp.message}`, imp.status === "failed" || (imp.errors || []).length ? "error" : "ok");
      await loadImports();
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function loadImports() {
  const imports = (await call("GET", `${api}/imports/`)).results ?? [];
  const body = $("#imports tbody");
  body.replaceChildren();
  const errors = $("#import-errors");
  errors.replaceChildren();
  for (const imp of imports) {
    const tr = document.createElement("tr");
    const c = imp.counts || {};
    cell(tr, imp.id);
    cell(tr, imp.source);
    cell(tr, imp.study_uids.length);
    cell(tr, imp.status, imp.status);
    cell(tr, c.series_stored ?? "");
    cell(tr, c.series_duplicates ?? "");
    cell(tr, c.series_failed ?? "", c.series_failed ? "failed" : "");
    cell(tr, imp.message);
    body.appendChild(tr);
  }
  for (const err of (imports[0] && imports[0].errors) || []) {
    const li = document.createElement("li");
    li.textContent = `${err.file}: ${err.reason}`;
    errors.appendChild(li);
  }
}

async function loadStoreBacks() {
  const rows = (await call("GET", `${api}/store-backs/`)).results ?? [];
  const body = $("#store-backs tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    cell(tr, r.finding);
    cell(tr, r.version);
    cell(tr, r.source);
    cell(tr, r.status, r.status);
    cell(tr, r.tries);
    cell(tr, r.message);
    body.appendChild(tr);
  }
}

$("#send-now").addEventListener("click", async () => {
  say("Sending…");
  try {
    const sent = await call("POST", `${api}/store-backs/`);
    const stored = sent.filter((r) => r.status === "stored").length;
    say(`${stored} of ${sent.length} sent.`, stored === sent.length ? "ok" : "error");
  } catch (e) {
    say(e.message, "error");
  }
  await loadStoreBacks();
});

function showAuthFields(auth) {
  for (const el of document.querySelectorAll("#source-form .basic")) el.hidden = auth !== "basic";
  for (const el of document.querySelectorAll("#source-form .bearer")) el.hidden = auth !== "bearer";
}
showAuthFields("none");
$("#source-form select[name=auth]").addEventListener("change", (event) => showAuthFields(event.target.value));

Promise.all([loadSources(), loadImports(), loadStoreBacks()])
  .then(() => (root.dataset.state = "ready"))
  .catch((e) => say(e.message, "error"));
