// The generator's web console: the routes of docs/API.md with the key typed into the page, kept in this tab's
// sessionStorage only. Every figure on the page comes from the API with that key, so it never holds another
// tenant's data. No framework and no build step: the browser's fetch, streams and DOM.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const POLL_MS = 1500;
const state = { key: sessionStorage.getItem("gift-key") || "", role: null, view: null, stop: new AbortController() };

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  const response = await fetch(path, { ...options, headers, signal: options.signal || state.stop.signal });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON: keep the status text */ }
    throw new ApiError(response.status, detail);
  }
  return response;
}

const json = async (path, options) => (await api(path, options)).json();

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function say(text, kind = "error") {
  $("message").textContent = text;
  $("message").className = kind;
  $("message").hidden = !text;
}

function failed(error) {
  if (error.name === "AbortError") return;
  say(error instanceof ApiError && error.status === 401 ? "This key was refused by the server (401)." : String(error.message || error));
}

function when(iso) {
  return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) : "";
}

function progress(job) {
  return el("progress", { max: String(job.total), value: String(job.done), title: `${job.done}/${job.total}` });
}

function stateCell(job) {
  return el("td", {}, el("span", { class: `state ${job.status}`, text: job.status }));
}

function freshId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function every(ms, step) {
  const signal = state.stop.signal;
  const run = async () => {
    while (!signal.aborted) {
      try { await step(); } catch (error) { failed(error); }
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
  };
  run();
}

// --- the key and who it is -------------------------------------------------------------------------------

async function identify() {
  state.role = null;
  if (!state.key) return render();
  try {
    await json("/v1/jobs?limit=1");
    state.role = "tenant";
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) return failed(error);
    try {
      await json("/v1/admin/jobs?limit=1");
      state.role = "admin";
    } catch (adminError) {
      failed(adminError);
    }
  }
  render();
}

function useKey(event) {
  event.preventDefault();
  state.key = $("key").value.trim();
  $("key").value = "";
  sessionStorage.setItem("gift-key", state.key);
  say("");
  identify();
}

function forgetKey() {
  sessionStorage.removeItem("gift-key");
  state.key = "";
  state.role = null;
  location.hash = "";
  render();
}

// --- views -----------------------------------------------------------------------------------------------

const VIEWS = { overview: showOverview, jobs: showJobs, job: showJob, submit: showSubmit, admin: showAdmin };

function render() {
  state.stop.abort();
  state.stop = new AbortController();
  const known = state.role !== null;
  $("nav").hidden = !known;
  $("welcome").hidden = known;
  $("forget").hidden = !state.key;
  $("who").textContent = known ? `${state.role} key` : "";
  document.querySelectorAll(".tenant-only").forEach((a) => { a.hidden = state.role !== "tenant"; });
  document.querySelectorAll(".admin-only").forEach((a) => { a.hidden = state.role !== "admin"; });
  document.querySelectorAll("main > section").forEach((section) => { section.hidden = true; });
  if (!known) return;
  const [name, argument] = (location.hash.slice(1) || "overview").split("/");
  const view = VIEWS[name] ? name : "overview";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("current", a.dataset.view === view));
  $(`view-${view}`).hidden = false;
  VIEWS[view](argument);
}

function metric(text, name) {
  let total = null;
  for (const line of text.split("\n")) {
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{")) {
      total = (total || 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return total;
}

function showOverview() {
  let last = null;
  every(POLL_MS, async () => {
    const text = await (await api("/metrics")).text();
    const made = metric(text, "gift_images_generated_total") || 0;
    const now = performance.now();
    $("queued-jobs").textContent = metric(text, "gift_queue_jobs") ?? 0;
    $("queued-images").textContent = metric(text, "gift_queue_images") ?? 0;
    $("workers-alive").textContent = metric(text, "gift_workers_alive") ?? 0;
    if (last) $("rate").textContent = ((made - last.made) / ((now - last.now) / 1000)).toFixed(1);
    last = { made, now };
    const rows = (await json("/v1/workers")).map((w) => el("tr", {},
      el("td", {}, el("code", { text: w.id })), el("td", { text: w.models.join(", ") }),
      el("td", { text: w.device }), el("td", { text: String(w.batch_size) }),
      el("td", { text: `${w.heartbeat_age_seconds.toFixed(1)} s` }), el("td", { text: String(w.chunks_held) }),
      el("td", { text: String(w.images_done) }),
      el("td", {}, ...w.jobs.map((id) => el("code", { text: id.slice(0, 8) + " " }))),
    ));
    $("workers").tBodies[0].replaceChildren(...rows);
  });
}

function jobRow(job, admin) {
  const name = el("code", { text: job.id });
  const cells = [el("td", {}, admin ? name : el("a", { href: `#job/${job.id}` }, name))];
  if (admin) cells.push(el("td", { text: job.tenant }));
  cells.push(stateCell(job), el("td", {}, progress(job), ` ${job.done}/${job.total}`),
    el("td", { text: when(job.created_at) }), el("td", { text: job.model }));
  if (admin) {
    const cancel = el("button", { type: "button", text: "Cancel" });
    cancel.hidden = TERMINAL.has(job.status);
    cancel.addEventListener("click", () => json(`/v1/admin/jobs/${job.id}`, { method: "DELETE" }).catch(failed));
    cells.push(el("td", {}, cancel));
  }
  return el("tr", { "data-job": job.id }, ...cells);
}

function pagedTable(table, path, filters, admin) {
  const cursors = [null];
  const query = () => {
    const params = new URLSearchParams({ limit: "20" });
    for (const [name, input] of Object.entries(filters)) if (input.value) params.set(name, input.value);
    const cursor = cursors[cursors.length - 1];
    if (cursor) params.set("cursor", cursor);
    return `${path}?${params}`;
  };
  let next = null;
  const load = async () => {
    const page = await json(query());
    next = page.next_cursor;
    table.tBodies[0].replaceChildren(...page.jobs.map((job) => jobRow(job, admin)));
    return page;
  };
  for (const input of Object.values(filters)) input.onchange = () => { cursors.splice(1); load().catch(failed); };
  return {
    load,
    older: () => { if (next) { cursors.push(next); load().catch(failed); } },
    newer: () => { if (cursors.length > 1) { cursors.pop(); load().catch(failed); } },
  };
}

function showJobs() {
  const table = pagedTable($("jobs"), "/v1/jobs", { status: $("jobs-status") }, false);
  $("jobs-older").onclick = table.older;
  $("jobs-newer").onclick = table.newer;
  every(POLL_MS, table.load);
}

function showAdmin() {
  const table = pagedTable($("admin-jobs"), "/v1/admin/jobs", { tenant: $("admin-tenant"), status: $("admin-status") }, true);
  every(POLL_MS, table.load);
}

// One job: its state now, then its event stream (progress, each image, the end) until it ends.
async function showJob(jobId) {
  $("job-id").textContent = jobId;
  $("gallery").replaceChildren();
  $("job-error").hidden = true;
  $("job-archive").disabled = true;
  $("job-archive").onclick = () => downloadArchive(jobId).catch(failed);
  $("job-cancel").onclick = () => json(`/v1/jobs/${jobId}`, { method: "DELETE" }).then(showStatus).catch(failed);
  try {
    const job = await json(`/v1/jobs/${jobId}`);
    showStatus(job);
    const shown = new Set();
    const steps = job.num_inference_steps;
    for (const image of job.images) addImage(image, steps, shown);
    if (!TERMINAL.has(job.status)) {
      await follow(`/v1/jobs/${jobId}/events`, (event, data) => {
        if (event === "progress") showStatus(data);
        else if (event === "image") addImage(data, steps, shown);
        else if (event === "end") showStatus(data);
      });
      for (const image of (await json(`/v1/jobs/${jobId}`)).images) addImage(image, steps, shown);
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      $("job-state").textContent = "not found";
      $("job-counts").textContent = "";
    }
    failed(error);
  }
}

function showStatus(job) {
  $("job-state").textContent = job.status;
  $("job-state").className = `state ${job.status}`;
  $("job-counts").textContent = `${job.done}/${job.total} images (${job.cached} cached)`;
  $("job-progress").max = job.total;
  $("job-progress").value = job.done;
  $("job-archive").disabled = job.status !== "succeeded";
  $("job-cancel").hidden = TERMINAL.has(job.status);
  if (job.error) {
    $("job-error").textContent = job.error;
    $("job-error").hidden = false;
  }
}

// Server-Sent Events read with fetch, which (unlike EventSource) can send the key.
async function follow(path, onEvent) {
  const response = await api(path, { headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

async function addImage(image, steps, shown) {
  if (shown.has(image.index)) return;
  shown.add(image.index);
  const picture = el("img", { alt: image.prompt, "data-index": String(image.index) });
  const caption = `#${image.index} · seed ${image.seed}` + (steps ? ` · ${steps} steps` : "");
  const figure = el("figure", { "data-index": String(image.index) }, picture,
    el("figcaption", {}, el("span", { class: "prompt", text: image.prompt }), caption));
  const before = [...$("gallery").children].find((other) => Number(other.dataset.index) > image.index);
  $("gallery").insertBefore(figure, before || null);
  const blob = await (await api(image.url)).blob();
  picture.src = URL.createObjectURL(blob);
  picture.addEventListener("click", () => {
    $("lightbox-image").src = picture.src;
    $("lightbox-caption").textContent = `${image.prompt} — ${caption} · ${picture.naturalWidth}×${picture.naturalHeight} px`;
    $("lightbox").hidden = false;
  });
}

async function downloadArchive(jobId) {
  const blob = await (await api(`/v1/jobs/${jobId}/archive`)).blob();
  const link = el("a", { href: URL.createObjectURL(blob), download: `${jobId}.tar` });
  document.body.append(link);
  link.click();
  link.remove();
  say(`Archive of job ${jobId}: ${blob.size} bytes.`, "info");
}

async function showSubmit() {
  try {
    const models = await json("/v1/models");
    $("model").replaceChildren(...models.map((m) => el("option", { value: m.name, text: `${m.name} (${m.width}×${m.height})` })));
    const preferred = models.find((m) => m.default);
    if (preferred) $("model").value = preferred.name;
  } catch (error) {
    failed(error);
  }
}

async function submitJob(event) {
  event.preventDefault();
  const lines = $("prompts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  const copies = Number($("per-prompt").value) || 1;
  const body = {
    prompts: lines.flatMap((line) => Array(copies).fill(line)),
    seed: Number($("seed").value),
    num_inference_steps: Number($("steps").value),
    guidance_scale: Number($("guidance").value),
  };
  if ($("model").value) body.model = $("model").value;
  try {
    const job = await json("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": freshId() },
      body: JSON.stringify(body),
    });
    say("");
    location.hash = `#job/${job.id}`;
  } catch (error) {
    failed(error);
  }
}

$("key-form").addEventListener("submit", useKey);
$("forget").addEventListener("click", forgetKey);
$("submit-form").addEventListener("submit", submitJob);
$("lightbox").addEventListener("click", () => { $("lightbox").hidden = true; });
window.addEventListener("hashchange", () => { say(""); render(); });
identify();
