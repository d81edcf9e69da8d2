// The moderator's review page: posts an upload to /v1/query (hits=true) or looks
// up a track id, then shows each match, its alignment and both segments to play.
// Plain JavaScript, no dependencies; every request goes to this server.
"use strict";

(() => {
  const KEY_STORE = "simsearch.apiKey";
  const MAX_CATALOG_S = 60; // the server's limit per audio request
  const SVG_NS = "http://www.w3.org/2000/svg";

  let generation = 0; // a newer review discards the answers of an older one
  let objectUrls = []; // the upload and the catalog excerpts of the current review

  // -- requests ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: "Bearer " + key } : {};
  }

  // fetch() with the API key; a non-2xx answer throws the API's JSON error.
  async function api(path, options = {}) {
    let resp;
    try {
      resp = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (exc) {
      throw new ApiError("network", "could not reach the server (" + exc.message + ")", 0);
    }
    if (!resp.ok) {
      let body = null;
      try {
        body = await resp.json();
      } catch (_) {
        // not JSON: a proxy's page, say
      }
      const code = (body && body.error) || "http_" + resp.status;
      const message = (body && body.message) || resp.status + " " + resp.statusText;
      throw new ApiError(code, message, resp.status);
    }
    return resp;
  }

  function trackPath(trackId) {
    return encodeURIComponent(trackId);
  }

  // The catalog excerpt [start, end] as an object URL (an <audio src> could not send the key).
  async function catalogAudioUrl(trackId, start, end) {
    const params = new URLSearchParams({ start: start.toFixed(3), end: end.toFixed(3) });
    const resp = await api("v1/audio/" + trackPath(trackId) + "?" + params);
    const url = URL.createObjectURL(await resp.blob());
    objectUrls.push(url);
    return url;
  }

  // -- page state --------------------------------------------------------------

  function startReview(what) {
    generation += 1;
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
    document.getElementById("results").replaceChildren();
    hideError();
    setStatus(what);
    return generation;
  }

  function setStatus(text) {
    document.getElementById("status").textContent = text;
  }

  // The API's JSON error, as the server worded it, after what was being done.
  function showError(context, err) {
    const box = document.getElementById("error");
    const where = err.status ? "HTTP " + err.status + ", " : "";
    box.replaceChildren(
      el("span", { class: "context" }, context + ": "),
      el("strong", { class: "message" }, err.message),
      el("span", { class: "code" }, " (" + where + (err.code || "error") + ")"),
    );
    if (err.status === 401 || err.status === 403) {
      box.append(el("p", {}, "Check the API key at the top of the page."));
    }
    box.dataset.code = err.code || "error";
    box.hidden = false;
    setStatus("");
  }

  function hideError() {
    const box = document.getElementById("error");
    box.hidden = true;
    box.replaceChildren();
    delete box.dataset.code;
  }

  // -- an upload -----------------------------------------------------------------

  async function reviewFile(file) {
    const mine = startReview("matching " + file.name + " …");
    const uploadUrl = URL.createObjectURL(file);
    objectUrls.push(uploadUrl);
    const form = new FormData();
    form.append("file", file);
    form.append("hits", "true");
    let result;
    try {
      result = await (await api("v1/query", { method: "POST", body: form })).json();
    } catch (err) {
      if (mine === generation) showError(file.name + " could not be matched", err);
      return;
    }
    if (mine !== generation) return;
    const n = result.matches.length;
    setStatus(file.name + ": " + result.duration_s.toFixed(2) + " s, " +
              (n ? n + (n === 1 ? " match" : " matches") : "no catalog track matches this upload") +
              " (" + result.elapsed_ms.toFixed(0) + " ms)");
    const results = document.getElementById("results");
    results.dataset.matches = String(n);
    result.matches.forEach((m, k) => results.append(matchCard(m, k + 1, result.duration_s, uploadUrl, mine)));
  }

  function matchCard(m, rank, queryDuration, uploadUrl, mine) {
    const card = el("article", { class: "match", "data-track-id": m.track_id });
    card.append(
      el("h2", {}, el("span", { class: "rank" }, "#" + rank + " "), el("span", { class: "track-id" }, m.track_id)),
      fieldTable([
        ["score", m.score.toFixed(0), "score"],
        ["kind", m.kind, "kind"],
        ["speed", "×" + m.speed.toFixed(3), "speed"],
        ["pitch", signed(m.pitch_semitones, 2) + " semitones", "pitch"],
        ["upload", range(m.query_start, m.query_end), "query-range"],
        ["catalog", range(m.ref_start, m.ref_end), "ref-range"],
        // Other places of the catalog track where the passage is found as well.
        ...((m.repeats || []).length
          ? [["also in catalog", m.repeats.map((r) => range(r.ref_start, r.ref_end)).join(", "), "repeats"]] : []),
      ]),
    );
    const plotSlot = el("figure", { class: "plot" });
    const players = el("div", { class: "players" });
    card.append(el("div", { class: "body" }, plotSlot, players));

    const upload = segmentPlayer("upload", m.query_start, m.query_end, "query-audio");
    upload.audio.src = uploadUrl;
    upload.audio.addEventListener("loadedmetadata", () => { upload.audio.currentTime = m.query_start; },
                                  { once: true });
    upload.audio.addEventListener("error", () => {
      upload.note.textContent = "this browser cannot play the uploaded file's format";
    });
    // A fitted line may start a hair before the track does.
    const catalogStart = Math.max(0, m.ref_start);
    const catalogEnd = Math.min(m.ref_end, catalogStart + MAX_CATALOG_S);
    const catalog = segmentPlayer("catalog", catalogStart, catalogEnd, "catalog-audio");
    const both = el("button", { type: "button", class: "play-both" }, "▶ play both");
    both.addEventListener("click", () => { upload.play(); catalog.play(); });
    players.append(upload.box, catalog.box, both);

    // The track's record gives the reference axis its full length (a sample
    // then shows as a short segment); the alignment is drawn without it too.
    api("v1/tracks/" + trackPath(m.track_id))
      .then((r) => r.json())
      .then((info) => info.duration, () => null)
      .then((refDuration) => {
        if (mine === generation) plotSlot.append(alignmentPlot(m, queryDuration, refDuration));
      });
    loadCatalog(catalog, m.track_id, catalogStart, catalogEnd, mine);
    return card;
  }

  // An <audio> with a button that plays the segment [start, end] (seconds of
  // the track; `offset` is where the loaded audio starts within the track).
  function segmentPlayer(label, start, end, cls) {
    const audio = el("audio", { controls: "", preload: "auto", class: cls });
    const button = el("button", { type: "button" });
    const note = el("p", { class: "note" });
    const box = el("div", { class: "player " + cls + "-box" }, el("h3", {}, label), audio, button, note);
    const player = { audio, box, note, button, offset: 0 };
    player.setSegment = (a, b) => {
      player.start = a;
      player.end = b;
      button.textContent = "▶ " + label + " " + range(a, b);
    };
    player.play = () => {
      if (!audio.src) return;
      audio.currentTime = player.start - player.offset;
      const stop = () => {
        if (audio.currentTime >= player.end - player.offset) {
          audio.pause();
          audio.removeEventListener("timeupdate", stop);
        }
      };
      audio.addEventListener("timeupdate", stop);
      audio.play();
    };
    player.setSegment(start, end);
    button.addEventListener("click", player.play);
    return player;
  }

  // Load the catalog excerpt [start, end] into `player`, or say why not.
  async function loadCatalog(player, trackId, start, end, mine) {
    player.offset = start;
    player.setSegment(start, end);
    player.note.textContent = "loading catalog audio …";
    try {
      const url = await catalogAudioUrl(trackId, start, end);
      if (mine !== generation) return;
      player.audio.src = url;
      player.audio.hidden = false;
      player.button.disabled = false;
      player.box.classList.remove("unavailable");
      player.note.textContent = "";
    } catch (err) {
      if (mine !== generation) return;
      player.audio.removeAttribute("src");
      player.audio.hidden = true;
      player.button.disabled = true;
      player.box.classList.add("unavailable");
      player.note.textContent = err.code === "audio_unavailable"
        ? "catalog audio not available for this track"
        : "catalog audio could not be loaded: " + err.message;
      player.note.title = err.message;
    }
  }

  // -- the alignment picture -----------------------------------------------------

  // Query time on x, reference time on y: the hits as dots, the fitted line
  // through the matched ranges, and a dashed unit-speed line for comparison.
  function alignmentPlot(m, queryDuration, refDuration) {
    const W = 380, H = 260, L = 52, R = 12, T = 12, B = 40;
    const hits = m.hits || [];
    const refMax = Math.max(refDuration || 0, m.ref_end, ...hits.map((h) => h[1])) || 1;
    const qMax = Math.max(queryDuration, m.query_end, ...hits.map((h) => h[0])) || 1;
    const x = (t) => L + (t / qMax) * (W - L - R);
    const y = (t) => H - B - (t / refMax) * (H - T - B);
    const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "alignment", role: "img",
                               "aria-label": `alignment of the upload with ${m.track_id}: ${hits.length} hits` });
    svg.append(svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
    for (const t of ticks(qMax)) {
      svg.append(svgEl("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, class: "tick" }));
      svg.append(svgText(x(t), H - B + 16, fmt(t), "middle"));
    }
    for (const t of ticks(refMax)) {
      svg.append(svgEl("line", { x1: L - 4, x2: L, y1: y(t), y2: y(t), class: "tick" }));
      svg.append(svgText(L - 7, y(t) + 4, fmt(t), "end"));
    }
    svg.append(svgText(L + (W - L - R) / 2, H - 6, "upload time (s)", "middle"));
    const yLabel = svgText(12, T + (H - T - B) / 2, "catalog time (s)", "middle");
    yLabel.setAttribute("transform", `rotate(-90 12 ${T + (H - T - B) / 2})`);
    svg.append(yLabel);
    // Unit speed through the middle of the match: the fitted line's slope against it shows the speed change.
    const qm = (m.query_start + m.query_end) / 2, rm = (m.ref_start + m.ref_end) / 2;
    const half = (m.query_end - m.query_start) / 2;
    svg.append(svgEl("line", { x1: x(qm - half), y1: y(rm - half), x2: x(qm + half), y2: y(rm + half),
                               class: "unit" }));
    const dots = svgEl("g", { class: "hits" });
    for (const [tq, tr] of hits) {
      const dot = svgEl("circle", { cx: x(tq), cy: y(tr), r: 2.4, class: "hit" });
      dot.append(svgEl("title", {}, `upload ${tq.toFixed(2)} s, catalog ${tr.toFixed(2)} s`));
      dots.append(dot);
    }
    svg.append(dots);
    svg.append(svgEl("line", { x1: x(m.query_start), y1: y(m.ref_start), x2: x(m.query_end), y2: y(m.ref_end),
                               class: "fit" }));
    svg.dataset.hits = String(hits.length);
    const legend = el("figcaption", {},
      el("span", { class: "swatch hit" }), " aligned hits  ",
      el("span", { class: "swatch fit" }), " fitted line (speed ×" + m.speed.toFixed(3) + ")  ",
      el("span", { class: "swatch unit" }), " unit speed");
    const fig = document.createDocumentFragment();
    fig.append(svg, legend);
    return fig;
  }

  function ticks(max) {
    const raw = max / 5;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw);
    const out = [];
    for (let t = 0; t <= max + 1e-9; t += step) out.push(t);
    return out;
  }

  // -- a track id ----------------------------------------------------------------

  async function showTrack(trackId) {
    const mine = startReview("looking up " + trackId + " …");
    let info;
    try {
      info = await (await api("v1/tracks/" + trackPath(trackId))).json();
    } catch (err) {
      if (mine === generation) showError("track " + JSON.stringify(trackId), err);
      return;
    }
    if (mine !== generation) return;
    setStatus("");
    const card = el("article", { class: "match track", "data-track-id": info.track_id });
    const rows = [
      ["duration", info.duration.toFixed(2) + " s", "duration"],
      ["triplets", String(info.n_triplets), "triplets"],
      ["source file", info.path || "(none recorded)", "path"],
    ];
    if (info.meta && Object.keys(info.meta).length) rows.push(["metadata", JSON.stringify(info.meta), "meta"]);
    // Up to a minute at a time, from where the moderator chooses.
    const from = el("input", { type: "number", min: "0", step: "1", value: "0", class: "from" });
    const excerpt = () => {
      const start = Math.min(Math.max(0, Number(from.value) || 0), Math.max(0, info.duration - 1));
      return [start, Math.min(info.duration, start + MAX_CATALOG_S)];
    };
    const player = segmentPlayer("catalog", ...excerpt(), "catalog-audio");
    const load = el("button", { type: "button", class: "load" }, "load");
    load.addEventListener("click", () => loadCatalog(player, info.track_id, ...excerpt(), mine));
    player.box.append(el("label", { class: "from-label" }, "from (s) ", from, load));
    card.append(el("h2", {}, el("span", { class: "track-id" }, info.track_id)), fieldTable(rows),
                el("div", { class: "players" }, player.box));
    document.getElementById("results").append(card);
    loadCatalog(player, info.track_id, ...excerpt(), mine);
  }

  // -- small helpers ---------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }

  function svgEl(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    node.append(...children);
    return node;
  }

  function svgText(xPos, yPos, text, anchor) {
    return svgEl("text", { x: xPos, y: yPos, "text-anchor": anchor }, text);
  }

  function fieldTable(rows) {
    return el("table", { class: "fields" },
      ...rows.map(([name, value, cls]) => el("tr", {}, el("th", {}, name), el("td", { class: cls }, value))));
  }

  const fmt = (t) => String(Math.round(t * 100) / 100);
  const signed = (v, digits) => (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(digits);
  const range = (a, b) => a.toFixed(2) + "–" + b.toFixed(2) + " s";

  // -- wiring ----------------------------------------------------------------------

  function init() {
    const key = document.getElementById("api-key");
    key.value = sessionStorage.getItem(KEY_STORE) || "";
    const keep = () => {
      if (key.value) sessionStorage.setItem(KEY_STORE, key.value);
      else sessionStorage.removeItem(KEY_STORE);
    };
    key.addEventListener("input", keep);
    key.addEventListener("change", keep);

    const input = document.getElementById("file-input");
    input.addEventListener("change", () => {
      if (input.files.length) reviewFile(input.files[0]);
      input.value = ""; // choosing the same file again is a new review
    });

    // A file dropped anywhere is reviewed (and never opened by the browser instead).
    const zone = document.getElementById("drop-zone");
    document.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      zone.classList.add("dragging");
    });
    document.addEventListener("dragleave", (ev) => {
      if (!ev.relatedTarget) zone.classList.remove("dragging");
    });
    document.addEventListener("drop", (ev) => {
      ev.preventDefault();
      zone.classList.remove("dragging");
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      if (file) reviewFile(file);
    });

    document.getElementById("track-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const id = document.getElementById("track-id").value.trim();
      if (id) showTrack(id);
    });
    document.body.dataset.ready = "true";
  }

  init();
})();
