// Debian's chromium, headless, driven by playwright-core: what every browser test of the page launches.
//
// playwright-core comes from .cache/node under this checkout's root (scripts/setup puts it there), else from
// where CAMCLASSD_NODE_MODULES says (a folder holding node_modules, or its package.json).
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
let modules = join(root, ".cache", "node");
if (!existsSync(join(modules, "node_modules", "playwright-core")) && process.env.CAMCLASSD_NODE_MODULES) {
  modules = process.env.CAMCLASSD_NODE_MODULES.replace(/\/package\.json$/, "").replace(/\/node_modules\/?$/, "");
}
const { chromium } = createRequire(join(modules, "package.json"))("playwright-core");

// A fresh profile (--user-data-dir) each run, removed by close(); a phone-sized window: the page must be
// readable and usable there.
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "camclassd-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 412, height: 915 },
    deviceScaleFactor: 1,
  });
  return {
    browser,
    async close() {
      await browser.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
