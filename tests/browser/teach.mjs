// The status page's Teach view in a real browser: Debian's chromium, headless, driven by playwright-core.
//
//   node tests/browser/teach.mjs URL MODEL label-train-use SCREENSHOT.png CLASS=ID,ID,... [CLASS=ID,...]
//   node tests/browser/teach.mjs URL MODEL rollback SCREENSHOT.png
//
// label-train-use: loads URL and waits (30 s) until MODEL's section shows every given id in its To-label
// grid. For each CLASS=IDS (the ids contiguous in the grid's order) it clicks the first, shift-clicks the
// last (ctrl-clicking one by one when that selected something else), and presses the class's key (its
// 1-based place in the section's classes). After the first class it presses Undo once, checks that those
// samples are unlabelled again, and labels them again with the class's button. It waits until the samples
// and the counts show the labels, clicks Train, waits (60 s) for the cross-validated accuracy, checks the
// confusion matrix was drawn, clicks Use and waits (60 s) until the section shows the new model in service.
// rollback: loads URL, clicks Roll back, and waits (60 s) until what is in service changes.
// Takes a screenshot, and prints one JSON line of what it found. Exits 1, naming what is missing, when a
// step does not happen in time (or the server refuses it).
import { launch } from "./browser.mjs";

const [url, model, mode, screenshot, ...wanted] = process.argv.slice(2);
if (!url || !model || !["label-train-use", "rollback"].includes(mode) || !screenshot ||
    (mode === "label-train-use" && !wanted.length)) {
  console.error("usage: teach.mjs URL MODEL label-train-use SCREENSHOT.png CLASS=ID,ID,... [CLASS=ID,...]\n" +
                "       teach.mjs URL MODEL rollback SCREENSHOT.png");
  process.exit(2);
}
const groups = wanted.map((w) => {
  const i = w.lastIndexOf("=");
  if (i <= 0) { console.error(`not CLASS=ID,...: ${w}`); process.exit(2); }
  return { cls: w.slice(0, i), ids: w.slice(i + 1).split(",").filter(Boolean) };
});

const { browser, close } = await launch();

class Failed extends Error {}

// Polls probe (run in the page with arg) until it answers { ok: true, ... }; on a timeout fails naming what
// the last answer says is missing. An answer { refused: text } fails at once.
async function until(page, what, seconds, probe, arg) {
  const end = Date.now() + seconds * 1000;
  let last = null;
  for (;;) {
    last = await page.evaluate(probe, arg);
    if (last && last.ok) return last;
    if (last && last.refused) throw new Failed(`${what}: refused: ${last.refused}`);
    if (Date.now() > end) throw new Failed(`${what}: not within ${seconds} s; missing: ${last?.missing ?? "?"}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

const sectionSel = `section.teach[data-model="${model.replace(/["\\]/g, "\\$&")}"]`;

// What the section shows: its loaded flag, each sample's grid and class, the selection, the counts.
function look(sel) {
  const s = document.querySelector(sel);
  if (!s) return null;
  const grid = (g) => [...s.querySelectorAll(`.samples.${g} figure.sample`)].map((f) => ({
    id: f.dataset.id, cls: f.dataset.class, selected: f.classList.contains("selected") && f.getAttribute("aria-selected") === "true",
  }));
  const counts = { classes: {}, unlabelled: null, review: null };
  for (const c of s.querySelectorAll(".counts .count[data-class]")) counts.classes[c.dataset.class] = Number(c.querySelector("b")?.textContent);
  counts.unlabelled = Number(s.querySelector(".counts .count.unlabelled b")?.textContent);
  counts.review = Number(s.querySelector(".counts .count.review b")?.textContent);
  const msg = s.querySelector(".teach-message");
  return {
    loaded: s.dataset.loaded === "1", state: s.dataset.state, runs: Number(s.dataset.trainRuns || 0),
    todo: grid("unlabelled"), labelled: grid("labelled"),
    classes: [...s.querySelectorAll("button.assign")].map((b) => b.dataset.class),
    counts, accuracy: s.querySelector(".accuracy")?.textContent ?? "", inService: s.querySelector(".in-service")?.textContent ?? "",
    trainError: s.querySelector(".train-error")?.textContent ?? "",
    message: msg ? { text: msg.textContent, action: msg.dataset.action ?? "", outcome: msg.dataset.outcome ?? "" } : null,
    train: !s.querySelector("button.train")?.disabled, use: !s.querySelector("button.use")?.disabled,
    rollback: !s.querySelector("button.rollback")?.disabled, undo: !s.querySelector("button.undo")?.disabled,
  };
}

const probe = `(${look.toString()})`;
const state = (page) => page.evaluate(([p, sel]) => eval(p)(sel), [probe, sectionSel]);
// A check on the section's state, polled in the page: fn(state, arg) answers { ok } or { missing } / { refused }.
const check = (page, what, seconds, fn, arg) =>
  until(page, what, seconds, ([p, sel, f, a]) => {
    const v = eval(p)(sel);
    if (!v || !v.loaded) return { missing: `section ${sel} (loaded)` };
    return eval(`(${f})`)(v, a);
  }, [probe, sectionSel, fn.toString(), arg ?? null]);

const fig = (page, grid, id) => page.locator(`${sectionSel} .samples.${grid} figure.sample[data-id="${id}"]`);

// Selects exactly ids in the To-label grid: click the first, shift-click the last; when that does not select
// just them, click the first and ctrl-click the rest.
async function selectTodo(page, ids) {
  await fig(page, "unlabelled", ids[0]).click();
  if (ids.length > 1) await fig(page, "unlabelled", ids[ids.length - 1]).click({ modifiers: ["Shift"] });
  const selected = async () => (await state(page)).todo.filter((f) => f.selected).map((f) => f.id);
  let got = await selected();
  const exact = (g) => g.length === ids.length && ids.every((id) => g.includes(id));
  if (!exact(got)) {
    await fig(page, "unlabelled", ids[0]).click();
    for (const id of ids.slice(1)) await fig(page, "unlabelled", id).click({ modifiers: ["Control"] });
    got = await selected();
    if (!exact(got)) throw new Failed(`selecting ${ids.join(",")} selected ${got.join(",")}`);
  }
}

const labelledAs = (v, a) => {
  const missing = a.ids.filter((id) => !v.labelled.some((f) => f.id === id && f.cls === a.cls));
  return missing.length ? { missing: `labelled ${a.cls}: ${missing.join(",")}` } : { ok: true };
};
const unlabelledAgain = (v, a) => {
  const missing = a.ids.filter((id) => !v.todo.some((f) => f.id === id && f.cls === ""));
  return missing.length ? { missing: `back in To label after Undo: ${missing.join(",")}` } : { ok: true };
};

let code = 0;
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  await page.goto(url, { waitUntil: "load" });

  if (mode === "label-train-use") {
    const all = groups.flatMap((g) => g.ids);
    const first = await check(page, `the To-label grid of ${model}`, 30, (v, ids) => {
      const missing = ids.filter((id) => !v.todo.some((f) => f.id === id && f.cls === ""));
      return missing.length ? { missing: missing.join(",") } : { ok: true };
    }, all);
    void first;
    const before = await state(page);
    const expect = { ...before.counts.classes };
    for (const g of groups) {
      const at = before.classes.indexOf(g.cls);
      if (at < 0) throw new Failed(`class ${g.cls} is not among the section's classes ${JSON.stringify(before.classes)}`);
      expect[g.cls] = (expect[g.cls] ?? 0) + g.ids.length;
    }
    for (const [n, g] of groups.entries()) {
      const key = before.classes.indexOf(g.cls) + 1;
      await selectTodo(page, g.ids);
      if (key <= 9) await page.keyboard.press(String(key));
      else await page.locator(`${sectionSel} button.assign[data-class="${g.cls}"]`).click();
      await check(page, `key ${key} labelling ${g.cls}`, 30, labelledAs, g);
      if (n === 0) {
        await page.locator(`${sectionSel} button.undo`).click();
        await check(page, `Undo of ${g.cls}`, 30, unlabelledAgain, g);
        const v = await state(page);
        const sel = v.todo.filter((f) => f.selected).map((f) => f.id);
        if (sel.length !== g.ids.length || !g.ids.every((id) => sel.includes(id))) await selectTodo(page, g.ids);
        await page.locator(`${sectionSel} button.assign[data-class="${g.cls}"]`).click();
        await check(page, `button ${g.cls} labelling`, 30, labelledAs, g);
      }
    }
    await check(page, "the counts", 30, (v, want) => {
      const off = Object.entries(want).filter(([c, k]) => v.counts.classes[c] !== k);
      return off.length ? { missing: off.map(([c, k]) => `${c} ${v.counts.classes[c]} (want ${k})`).join(", ") } : { ok: true };
    }, expect);

    // Train: a run that ends after the click, with a number for its accuracy.
    await check(page, "Train enabled", 60, (v) => (v.train ? { ok: true } : { missing: `Train (state ${v.state})` }));
    const runs = (await state(page)).runs;
    await page.locator(`${sectionSel} button.train`).click();
    await check(page, "the training", 60, (v, runs) => {
      if (v.message?.action === "train" && v.message.outcome === "refused" && v.runs === runs) return { refused: v.message.text };
      if (v.runs <= runs) return { missing: `a finished run (state ${v.state})` };
      if (v.state === "failed") return { refused: v.trainError };
      return /\d/.test(v.accuracy) ? { ok: true } : { missing: `.accuracy with a number (shows "${v.accuracy}")` };
    }, runs);
    const canvas = await page.evaluate((sel) => {
      const c = document.querySelector(`${sel} canvas.confusion`);
      if (!c) return null;
      const r = c.getBoundingClientRect();
      const px = c.width && c.height ? c.getContext("2d").getImageData(0, 0, c.width, c.height).data : [];
      let painted = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i]) painted++;
      return { width: c.width, height: c.height, shown: [r.width, r.height], painted, drawn: c.dataset.drawn ?? "" };
    }, sectionSel);
    if (!canvas || !canvas.width || !canvas.height || !canvas.shown[0] || !canvas.shown[1] || !canvas.painted)
      throw new Failed(`the confusion matrix was not drawn: ${JSON.stringify(canvas)}`);

    // Use: the section then shows the model the server put in service.
    await check(page, "Use enabled", 60, (v) => (v.use ? { ok: true } : { missing: "Use (no candidate)" }));
    await page.locator(`${sectionSel} button.use`).click();
    await check(page, "the model in service", 60, (v) => {
      if (v.message?.action !== "use") return { missing: "an answer to Use" };
      if (v.message.outcome === "refused") return { refused: v.message.text };
      const sha = /[0-9a-f]{12}/.exec(v.message.text)?.[0];
      const shown = /[0-9a-f]{12}/.exec(v.inService)?.[0];
      return shown && (!sha || sha === shown) ? { ok: true } : { missing: `.in-service with ${sha ?? "a sha"} (shows "${v.inService}")` };
    });
    const v = await state(page);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ errors, accuracy: v.accuracy, in_service: v.inService, counts: v.counts,
                                 confusion: canvas, scroll_width: width }));
  } else {
    const v = await check(page, `the section of ${model}`, 30, (v) => ({ ok: true, ...v }));
    if (!v.rollback) throw new Failed("Roll back is disabled: no previous model");
    const before = v.inService;
    await page.locator(`${sectionSel} button.rollback`).click();
    const after = await check(page, "the rollback", 60, (v, before) => {
      if (v.message?.action === "rollback" && v.message.outcome === "refused") return { refused: v.message.text };
      return v.inService !== before ? { ok: true, inService: v.inService } : { missing: `a change of .in-service (shows "${before}")` };
    }, before);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ errors, before, after: after.inService, scroll_width: width }));
  }
} catch (e) {
  const text = await (async () => {
    try { return (await browser.pages()[0]?.innerText(sectionSel, { timeout: 1000 })) ?? ""; } catch { return ""; }
  })();
  console.error(`teach page check failed: ${e instanceof Failed ? e.message : e.stack ?? e}\nsection text:\n${text}`);
  code = 1;
} finally {
  await close();
}
process.exit(code);
