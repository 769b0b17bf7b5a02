// Live dashboard: polls the worker's JSON API and draws plain <canvas> charts.
// No build step, no libraries. Every number shown keeps its raw value in data-value.
"use strict";

const REFRESH_MS = 2500;
const RATE_SAMPLES = 120; // about five minutes of 2.5 s samples
const COLORS = {
  pageViews: "#3867d6",
  active: "#20a386",
  sessions: "#8854d0",
  late: "#e58e26",
  dlq: "#d63447",
};

const state = {
  minutes: 30,
  refreshes: 0,
  samples: [], // {t, events, late, dlq} from /api/stats totals
  charts: {}, // id -> last drawing arguments, to redraw on resize
};

const $ = (id) => document.getElementById(id);

function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function setNumber(id, value, digits = 0) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = fmt(value, digits);
}

const hhmm = (iso) => (iso ? iso.slice(11, 16) : "");
const hhmmss = (iso) => (iso ? iso.slice(11, 19) : "–");

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// -- charts -------------------------------------------------------------------

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

function shortNumber(value) {
  if (value >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (value >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  return `${+value.toFixed(2)}`;
}

function drawChart(id, labels, series, kind) {
  state.charts[id] = [labels, series, kind];
  const canvas = $(id);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 46, r: 10, t: 8, b: 20 };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;

  const n = labels.length;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  max = niceMax(max);

  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(pad.t + ph - (ph * i) / 4) + 0.5;
    ctx.strokeStyle = "#e3e6ee";
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(w - pad.r, y);
    ctx.stroke();
    ctx.fillStyle = "#6b7385";
    ctx.fillText(shortNumber((max * i) / 4), pad.l - 6, y);
  }
  if (!n) {
    ctx.textAlign = "center";
    ctx.fillText("no data yet", pad.l + pw / 2, pad.t + ph / 2);
    return;
  }
  const xAt =
    kind === "bar"
      ? (i) => pad.l + (pw * (i + 0.5)) / n
      : (i) => pad.l + (n === 1 ? pw / 2 : (pw * i) / (n - 1));
  const yAt = (v) => pad.t + ph - (ph * v) / max;

  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  ctx.fillStyle = "#6b7385";
  const step = Math.max(1, Math.ceil(n / 7));
  for (let i = n - 1; i >= 0; i -= step) {
    const half = ctx.measureText(labels[i]).width / 2;
    const x = Math.min(Math.max(xAt(i), pad.l + half), w - half - 1); // keep labels inside
    ctx.fillText(labels[i], x, h - 5);
  }

  for (const s of series) {
    ctx.fillStyle = s.color;
    ctx.strokeStyle = s.color;
    if (kind === "bar") {
      const bw = Math.max(1, (pw / n) * 0.72);
      s.values.forEach((v, i) => {
        const y = yAt(v);
        ctx.fillRect(xAt(i) - bw / 2, y, bw, pad.t + ph - y);
      });
      continue;
    }
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.values.forEach((v, i) => (i ? ctx.lineTo(xAt(i), yAt(v)) : ctx.moveTo(xAt(i), yAt(v))));
    ctx.stroke();
    if (s.fill) {
      ctx.lineTo(xAt(n - 1), pad.t + ph);
      ctx.lineTo(xAt(0), pad.t + ph);
      ctx.closePath();
      ctx.globalAlpha = 0.12;
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    ctx.lineWidth = 1;
  }
}

// -- rendering ------------------------------------------------------------------

function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  body.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      for (const [text, cls] of cells) {
        const td = document.createElement("td");
        td.textContent = text; // never innerHTML: page URLs come from the input topic
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      return tr;
    }),
  );
}

function renderPageViews(pv) {
  setNumber("pv-total", pv.total_views);
  const windows = pv.windows;
  setNumber("pv-latest", windows.length ? windows[windows.length - 1].total_views : null);
  $("newest-minute").textContent = pv.newest_window_start ? pv.newest_window_start.slice(0, 16).replace("T", " ") : "–";
  drawChart(
    "chart-page-views",
    windows.map((w) => hhmm(w.window_start)),
    [{ values: windows.map((w) => w.total_views), color: COLORS.pageViews }],
    "bar",
  );
  fillTable(
    "top-pages",
    pv.top_pages.map((p) => [
      [p.page_url, "url"],
      [fmt(p.view_count), "num"],
    ]),
  );
}

function renderActiveUsers(au) {
  const current = au.current;
  setNumber("active-current", current ? current.active_user_count : null);
  $("active-window").textContent = current
    ? `${hhmm(current.window_start)}–${hhmm(current.window_end)}`
    : "–";
  drawChart(
    "chart-active-users",
    au.windows.map((w) => hhmm(w.window_end)),
    [{ values: au.windows.map((w) => w.active_user_count), color: COLORS.active, fill: true }],
    "line",
  );
}

function renderSessions(ss) {
  setNumber("sessions-open", ss.by_status.active);
  setNumber("sessions-ended", ss.by_status.ended);
  setNumber("sessions-timed-out", ss.by_status.timed_out);
  drawChart(
    "chart-sessions",
    ss.open_per_minute.map((p) => hhmm(p.at)),
    [{ values: ss.open_per_minute.map((p) => p.open_sessions), color: COLORS.sessions, fill: true }],
    "line",
  );
}

function renderStats(st) {
  $("worker-id").textContent = st.worker.id;
  const totals = st.totals;
  setNumber("events-total", totals.events);
  setNumber("late-total", totals.late);
  setNumber("dlq-total", totals.dead_letters);

  const now = Date.now() / 1000;
  const last = state.samples[state.samples.length - 1];
  if (last && totals.events < last.events) state.samples = []; // the worker restarted
  state.samples.push({ t: now, events: totals.events, late: totals.late, dlq: totals.dead_letters });
  if (state.samples.length > RATE_SAMPLES + 1) state.samples.shift();
  const rates = [];
  for (let i = 1; i < state.samples.length; i++) {
    const a = state.samples[i - 1];
    const b = state.samples[i];
    const dt = Math.max(b.t - a.t, 0.001);
    rates.push({
      t: b.t,
      events: (b.events - a.events) / dt,
      late: (b.late - a.late) / dt,
      dlq: (b.dlq - a.dlq) / dt,
    });
  }
  const newest = rates[rates.length - 1];
  setNumber("events-rate", newest ? newest.events : null, 1);
  setNumber("late-rate", newest ? newest.late : null, 2);
  setNumber("dlq-rate", newest ? newest.dlq : null, 2);
  drawChart(
    "chart-rates",
    rates.map((r) => new Date(r.t * 1000).toISOString().slice(11, 19)),
    [
      { values: rates.map((r) => r.late), color: COLORS.late },
      { values: rates.map((r) => r.dlq), color: COLORS.dlq },
    ],
    "line",
  );

  fillTable(
    "sources",
    st.sources
      .filter((s) => s.assigned)
      .map((s) => [
        [String(s.partition)],
        [fmt(s.events), "num"],
        [fmt(s.late), "num"],
        [fmt(s.dead_letters), "num"],
        [fmt(s.consumer_lag), "num"],
        [hhmmss(s.watermark)],
      ]),
  );
  fillTable(
    "user-partitions",
    st.user_partitions
      .filter((u) => u.assigned)
      .map((u) => [
        [String(u.partition)],
        [fmt(u.open_sessions), "num"],
        [fmt(u.late_at_merge), "num"],
        [fmt(u.consumer_lag), "num"],
        [hhmmss(u.merged_watermark)],
      ]),
  );
}

// -- polling ----------------------------------------------------------------------

async function refresh() {
  const m = state.minutes;
  const results = await Promise.allSettled([
    getJSON(`/api/page-views?minutes=${m}&top=6`),
    getJSON(`/api/active-users?minutes=${m}`),
    getJSON(`/api/sessions?minutes=${m}`),
    getJSON("/api/stats"),
  ]);
  const renderers = [renderPageViews, renderActiveUsers, renderSessions, renderStats];
  const errors = [];
  results.forEach((result, i) => {
    if (result.status === "fulfilled") {
      try {
        renderers[i](result.value);
      } catch (err) {
        errors.push(String(err));
      }
    } else {
      errors.push(result.reason.message || String(result.reason));
    }
  });
  state.refreshes += 1;
  document.body.dataset.refreshes = String(state.refreshes);
  document.body.dataset.state = errors.length ? "error" : "ok";
  $("status").textContent = errors.length ? `degraded: ${errors[0]}` : "live";
  $("status").title = errors.join("\n");
  $("updated").textContent = new Date().toISOString().slice(11, 19);
}

async function loop() {
  try {
    await refresh();
  } finally {
    setTimeout(loop, REFRESH_MS);
  }
}

// `/?minutes=60` presets the range (one of the select's options).
const preset = new URLSearchParams(window.location.search).get("minutes");
if (preset && [...$("range").options].some((o) => o.value === preset)) {
  $("range").value = preset;
  state.minutes = Number(preset);
}
$("range").addEventListener("change", (event) => {
  state.minutes = Number(event.target.value);
  refresh();
});
window.addEventListener("resize", () => {
  for (const [id, args] of Object.entries(state.charts)) drawChart(id, ...args);
});
loop();
