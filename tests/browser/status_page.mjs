// The status page in a real browser: Debian's chromium, headless, driven by playwright-core.
//
//   node tests/browser/status_page.mjs URL SCREENSHOT.png CAMERA=LABEL|CAMERA/REGION=LABEL [...]
//
// Loads URL, waits until every named camera's card shows its name, a loaded (non-zero size) frame, and
// for CAMERA=LABEL (a camera without regions) the expected current label and the box the model sees over
// the frame; for CAMERA/REGION=LABEL the region's name, its expected label and its box (with its name)
// drawn over the frame. Takes a screenshot, and prints one JSON line of what it found. Exits 1 (naming
// what is missing) when that does not happen within 30 s.
import { launch } from "./browser.mjs";

const [url, screenshot, ...wanted] = process.argv.slice(2);
const cameras = wanted.map((w) => {
  const i = w.indexOf("="), key = w.slice(0, i), slash = key.indexOf("/");
  return slash < 0 ? { name: key, region: null, label: w.slice(i + 1) }
                   : { name: key.slice(0, slash), region: key.slice(slash + 1), label: w.slice(i + 1) };
});
const { browser, close } = await launch();
let code = 0;
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  const seen = await page.waitForFunction((cameras) => {
    const found = [];
    for (const c of cameras) {
      const card = document.querySelector(`section.camera[data-camera="${CSS.escape(c.name)}"]`);
      if (!card) return false;
      const name = card.querySelector("h2.name")?.textContent;
      const img = card.querySelector(".frame img");
      if (name !== c.name || !img || !img.complete || img.naturalWidth === 0) return false;
      const box = img.getBoundingClientRect();
      if (box.width === 0 || box.height === 0) return false;
      if (c.region === null) {
        const label = card.querySelector(".label")?.textContent;
        if (label !== c.label) return false;
        const crop = card.querySelector(".crop").getBoundingClientRect();
        if (crop.width === 0 || crop.height === 0) return false;
        found.push({ name, label, natural: [img.naturalWidth, img.naturalHeight], shown: [box.width, box.height],
                     bars: card.querySelectorAll(".bar").length, crop: [crop.width, crop.height] });
        continue;
      }
      const block = card.querySelector(`.region[data-region="${CSS.escape(c.region)}"]`);
      const shape = card.querySelector(`.box[data-region="${CSS.escape(c.region)}"]`);
      if (!block || !shape) return false;
      const region = block.querySelector("h3.region-name")?.firstChild?.textContent;
      const label = block.querySelector(".label")?.textContent;
      if (region !== c.region || label !== c.label || shape.textContent !== c.region) return false;
      const r = shape.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) return false;
      found.push({ name, region, label, natural: [img.naturalWidth, img.naturalHeight], shown: [box.width, box.height],
                   bars: block.querySelectorAll(".bar").length, box: [r.left - box.left, r.top - box.top, r.width, r.height] });
    }
    return found;
  }, cameras, { timeout: 30000, polling: 200 });
  const found = await seen.jsonValue();
  // The page must fit a phone's width: nothing wider than the window.
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ cameras: found, scroll_width: width, errors }));
} catch (e) {
  const text = await (async () => { try { return (await browser.pages()[0]?.innerText("body")) ?? ""; } catch { return ""; } })();
  console.error(`status page check failed: ${e.message}\npage text:\n${text}`);
  code = 1;
} finally {
  await close();
}
process.exit(code);
