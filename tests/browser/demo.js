// Drive the running demo in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser):
// load the page, upload an image, move the keep-ratio slider, run, and check both answers and the overlay.
// usage: node tests/browser/demo.js URL IMAGE SCREENSHOT   -> prints one JSON line with what it found
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, image, screenshot] = process.argv.slice(2);

(async () => {
  // Playwright passes --headless itself and takes the profile directory as userDataDir (a fresh one).
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "iwp-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const result = {};
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(60000);
    await page.goto(url, { waitUntil: "domcontentloaded" });
    await page.locator("#run").waitFor();

    await page.locator("#input-image input[type=file]").setInputFiles(image);
    await page.locator("#input-image img").first().waitFor();          // the upload is shown

    const range = page.locator("#keep-ratio input[type=range]");
    await range.fill("0.5");                                           // move the slider
    result.keep = await page.locator("#keep-ratio input[type=number]").inputValue();

    await page.locator("#run").click();
    const answer = (id) => page.locator(`#${id} textarea`);
    await page.waitForFunction(() => {
      const v = (id) => document.querySelector(`#${id} textarea`)?.value || "";
      return v("answer-unpruned").length > 0 && v("answer-pruned").length > 0;
    });
    result.unpruned = await answer("answer-unpruned").inputValue();
    result.pruned = await answer("answer-pruned").inputValue();
    const overlay = page.locator("#overlay img").first();
    await overlay.waitFor();
    await page.waitForFunction(() => {
      const img = document.querySelector("#overlay img");
      return img && img.complete && img.naturalWidth > 0;
    });
    result.overlay_width = await overlay.evaluate((img) => img.naturalWidth);
    await page.locator("#summary").getByText("Speed-up").waitFor();    // the follow-up views arrived
    result.summary = (await page.locator("#summary").innerText()).trim();
    result.stats_pruned = (await page.locator("#stats-pruned").innerText()).trim();
    await page.screenshot({ path: screenshot, fullPage: true });
    result.screenshot = screenshot;

    // Click a patch on the overlay: the cover tab then names that patch and the kept patch covering it.
    const coverTab = page.getByRole("tab", { name: "Dropped → cover" });
    await coverTab.click();
    await page.locator("#cover-text").getByText("token").first().waitFor();
    result.cover_before = (await page.locator("#cover-text").innerText()).trim();
    await page.getByRole("tab", { name: "Categories" }).click();
    const box = await overlay.boundingBox();
    await overlay.click({ position: { x: box.width * 0.3, y: box.height * 0.25 } });
    await coverTab.click();
    await page.waitForFunction((before) => {
      const text = document.querySelector("#cover-text")?.innerText || "";
      return /token \d+ (was dropped|is kept)/.test(text) && text.trim() !== before;
    }, result.cover_before);
    result.cover_text = (await page.locator("#cover-text").innerText()).trim();

    // A video example, if the demo lists one: its (lazily cached) results and the frames with overlays.
    const videoRow = page.locator("#examples tr.tr-body").filter({ has: page.locator("td.video video") });
    result.example_frames = 0;
    if (await videoRow.count()) {
      await videoRow.first().click();
      await page.getByRole("tab", { name: "Video frames" }).click();
      await page.locator("#frames img").first().waitFor({ timeout: 90000 });
      result.example_frames = await page.locator("#frames img").count();
      result.example_pruned = await answer("answer-pruned").inputValue();
    }
    result.ok = true;
  } catch (err) {
    result.ok = false;
    result.error = String(err && err.stack ? err.stack : err);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
})();
