// Follows every unfinished job on a console page: each `[data-job]` element whose `data-status` is
// pending or running asks `/api/jobs/<id>/` (the API's own job view and access check) once a second and
// shows the progress in its <progress> bar and as text ("40 %", the status word, the job's message), so
// colour is never the only signal. When a job ends, a "Show the result" link appears beside it (no
// automatic reload: keyboard focus stays where it is). Without JavaScript the page still shows the state
// it was rendered with and a link to refresh.
const UNFINISHED = new Set(["pending", "running"]);
const INTERVAL_MS = 1000;

function show(el, job) {
  const percent = Math.round(Math.max(0, Math.min(1, Number(job.progress) || 0)) * 100);
  el.querySelector("progress").value = percent;
  el.querySelector("[data-job-percent]").textContent = `${percent} %`;
  const status = el.querySelector("[data-job-status]");
  status.textContent = job.status;
  status.className = `status status-${job.status}`;
  el.querySelector("[data-job-message]").textContent = job.message ? ` · ${job.message}` : "";
  el.dataset.status = job.status;
}

function finished(el) {
  if (el.querySelector("a.job-result")) return;
  const link = document.createElement("a");
  link.className = "job-result";
  link.href = window.location.pathname + window.location.search;
  link.textContent = "Show the result";
  el.appendChild(link);
}

async function follow(el) {
  const url = `/api/jobs/${encodeURIComponent(el.dataset.job)}/`;
  while (UNFINISHED.has(el.dataset.status)) {
    await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS));
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    } catch {
      el.dataset.pollError = "network";
      continue;
    }
    if (!response.ok) {
      el.dataset.pollError = String(response.status);
      if (response.status === 403 || response.status === 404) return;
      continue;
    }
    delete el.dataset.pollError;
    show(el, await response.json());
  }
  finished(el);
}

for (const el of document.querySelectorAll("[data-job]")) {
  if (UNFINISHED.has(el.dataset.status)) follow(el);
}
