// The annotation page's only script: keyboard scoring, draft autosave, image zoom and
// the frame player. Without it the page still works as a plain form.
(function () {
  "use strict";
  const form = document.getElementById("labels");
  const cells = form ? Array.from(form.querySelectorAll("[data-cell]")) : [];
  let active = 0;

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio")
                  || el.tagName === "SELECT");
  }
  function activate(i, focusText) {
    if (!cells.length) return;
    active = Math.max(0, Math.min(cells.length - 1, i));
    cells.forEach((c, j) => c.classList.toggle("active", j === active));
    const cell = cells[active];
    const text = cell.querySelector("textarea");
    if (text && focusText) { text.focus(); }
    else if (document.activeElement && typing(document.activeElement)) { document.activeElement.blur(); }
    cell.scrollIntoView({block: "nearest"});
  }
  function setValue(cell, digit) {
    const radio = cell.querySelector('input[type=radio][value="' + digit + '"]');
    if (radio) { radio.checked = true; return true; }
    const select = cell.querySelector("select");
    if (select && select.querySelector('option[value="' + digit + '"]')) {
      select.value = String(digit); return true;
    }
    return false;
  }

  // ---- draft autosave: the form's fields as JSON, debounced --------------------------
  // The draft carries the form's revision: one sent before a submit and arriving after it
  // is refused by the server (409), and none is sent once the form is submitted.
  let timer = null;
  let submitted = false;
  const status = document.getElementById("draft-status");
  function saveDraft() {
    if (!form || !form.dataset.draft || submitted) return;
    const data = {};
    new FormData(form).forEach((v, k) => { if (k !== "csrf") data[k] = v; });
    fetch(form.dataset.draft, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf},
      body: JSON.stringify(data),
    }).then(r => { if (status) status.textContent = r.ok ? "draft saved" : "draft not saved (" + r.status + ")"; });
  }
  function changed() { clearTimeout(timer); timer = setTimeout(saveDraft, 400); }
  if (form) {
    form.addEventListener("input", changed);
    form.addEventListener("change", changed);
    form.addEventListener("submit", () => { submitted = true; clearTimeout(timer); });
  }
  cells.forEach((c, j) => c.addEventListener("click", () => activate(j, false)));

  // ---- media ------------------------------------------------------------------------
  const media = document.getElementById("media");
  const image = document.getElementById("image");
  function zoom() { if (media && image) media.classList.toggle("zoomed"); }
  if (image) image.addEventListener("click", zoom);
  const frame = document.getElementById("frame");
  const slider = document.getElementById("frame-slider");
  const play = document.getElementById("play");
  let player = null;
  function show(i) {
    const n = Number(frame.dataset.frames);
    i = ((i % n) + n) % n;
    slider.value = String(i);
    frame.src = frame.dataset.base + i;
    document.getElementById("frame-label").textContent = "frame " + (i + 1) + " / " + n;
  }
  function toggle() {
    if (player) { clearInterval(player); player = null; play.textContent = "play"; return; }
    player = setInterval(() => show(Number(slider.value) + 1), 250);
    play.textContent = "pause";
  }
  if (frame) {
    slider.addEventListener("input", () => show(Number(slider.value)));
    play.addEventListener("click", toggle);
  }

  // ---- keys -------------------------------------------------------------------------
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && form) {
      e.preventDefault(); clearTimeout(timer); form.requestSubmit(); return;
    }
    const el = document.activeElement;
    if (el && el.tagName === "TEXTAREA") {
      if (e.key === "Tab" || e.key === "Escape") {
        const i = cells.findIndex(c => c.contains(el));
        if (i >= 0) { e.preventDefault(); activate(i + (e.shiftKey ? -1 : 1), true); }
        else if (e.key === "Escape") { el.blur(); }
      }
      return;
    }
    if (typing(el) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key) && cells.length) {
      if (setValue(cells[active], Number(e.key))) {
        e.preventDefault(); changed(); activate(active + 1, true);
      }
    } else if (e.key === "ArrowDown") { e.preventDefault(); activate(active + 1, false); }
    else if (e.key === "ArrowUp") { e.preventDefault(); activate(active - 1, false); }
    else if (e.key === "Enter" && cells.length && cells[active].querySelector("textarea")) {
      e.preventDefault(); activate(active, true);
    }
    else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      const here = cells[active].dataset.cell.split("_").slice(1).join("_");
      const idx = Number((cells[active].dataset.cell.match(/^r(\d+)_/) || [0, -1])[1]);
      const target = "r" + (idx + (e.key === "ArrowRight" ? 1 : -1)) + "_" + here;
      const j = cells.findIndex(c => c.dataset.cell === target);
      if (j >= 0) activate(j, false);
    }
    else if (e.key === "n" && document.getElementById("next")) { document.getElementById("next").click(); }
    else if (e.key === "p" && document.getElementById("prev")) { document.getElementById("prev").click(); }
    else if (e.key === "z") { zoom(); }
    else if (e.key === " " && frame) { e.preventDefault(); toggle(); }
    else if (e.key === "." && frame) { show(Number(slider.value) + 1); }
    else if (e.key === "," && frame) { show(Number(slider.value) - 1); }
  });
  activate(0, false);
})();
