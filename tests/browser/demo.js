// Drive the running demo in headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser), as a
// visitor would: a photo with a non-IWP method (labels, overlay, opacity), the tab rule with a video the
// browser cannot play, errors and stale results cleared, a click on the overlay, and a video example.
// usage: node tests/browser/demo.js URL PHOTO VIDEO SCREENSHOT   -> prints one JSON line with what it found
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, photo, video, screenshot, ladderShot] = process.argv.slice(2);

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
  const result = { step: "start" };
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(60000);
    await page.goto(url, { waitUntil: "domcontentloaded" });
    await page.locator("#run").waitFor();
    const text = async (id) => (await page.locator(`#${id}`).innerText()).trim();
    const value = (id) => page.locator(`#${id} textarea`).inputValue();
    const toasts = () => page.evaluate(() => [...document.querySelectorAll(".toast-body")].map((t) => t.innerText));
    const answered = () => page.waitForFunction(() => {
      const v = (id) => document.querySelector(`#${id} textarea`)?.value || "";
      return v("answer-unpruned").length > 0 && v("answer-pruned").length > 0;
    });
    const summaryHas = (needle) => page.waitForFunction((n) =>
      (document.querySelector("#summary")?.innerText || "").includes(n), needle);
    const overlaySrc = () => page.evaluate(() => document.querySelector("#overlay img")?.src || "");

    // 1. A photo, with a method other than IWP: its labels, the overlay, the opacity control.
    result.step = "photo";
    await page.locator("#input-image input[type=file]").setInputFiles(photo);
    await page.locator("#input-image img").first().waitFor();
    await page.locator("#method input").click();
    await page.getByRole("option", { name: "fastv", exact: true }).click();
    await page.locator("#keep-ratio input[type=range]").fill("0.5");
    result.keep = await page.locator("#keep-ratio input[type=number]").inputValue();
    await page.locator("#run").click();
    await answered();
    await summaryHas("Speed-up");
    await page.waitForFunction(() => {
      const img = document.querySelector("#overlay img");
      return img && img.complete && img.naturalWidth > 0;
    });
    result.overlay_width = await page.locator("#overlay img").first().evaluate((img) => img.naturalWidth);
    result.legend = await text("legend");
    result.summary = await text("summary");
    result.stats_pruned = await text("stats-pruned");
    const before = await overlaySrc();
    const opacity = page.locator("#opacity input[type=range]");
    await opacity.fill("0");
    await opacity.dispatchEvent("pointerup");
    await page.waitForFunction((b) => (document.querySelector("#overlay img")?.src || "") !== b, before,
                               { timeout: 15000 }).then(() => { result.opacity_redraw = true; },
                                                        () => { result.opacity_redraw = false; });
    await page.evaluate(() => document.querySelectorAll(".toast-close").forEach((b) => b.click()));
    await page.waitForTimeout(300);
    await page.screenshot({ path: screenshot, fullPage: true });

    // 1b. Move the keep-ratio slider: the overlay is redrawn from the recorded pick order (no model run).
    result.step = "slider";
    const keep = page.locator("#keep-ratio input[type=range]");
    result.slider_ms = [];
    result.slider_start = Date.now();
    for (const v of ["0.1", "0.3", "0.2", "0.05", "0.15", "0.4", "0.25"]) {
      const src = await overlaySrc();
      const t0 = Date.now();
      await keep.fill(v);
      await keep.dispatchEvent("pointerup");
      await page.waitForFunction((b) => {
        const img = document.querySelector("#overlay img");
        return img && img.src !== b && img.complete && img.naturalWidth > 0;
      }, src, { timeout: 15000 });
      result.slider_ms.push(Date.now() - t0);
    }
    result.slider_end = Date.now();
    result.slider_legend = await text("legend");
    result.slider_answer = await value("answer-pruned");

    // 2. Click a patch on the overlay: the cover tab names that patch and the kept patch covering it.
    result.step = "cover";
    const overlay = page.locator("#overlay img").first();
    const coverTab = page.getByRole("tab", { name: "Dropped → cover" });
    await coverTab.click();
    await page.locator("#cover-text").getByText("token").first().waitFor();
    const coverBefore = await text("cover-text");
    await page.getByRole("tab", { name: "Categories" }).click();
    const box = await overlay.boundingBox();
    await overlay.click({ position: { x: box.width * 0.3, y: box.height * 0.25 } });
    await coverTab.click();
    await page.waitForFunction((b) => {
      const t = document.querySelector("#cover-text")?.innerText || "";
      return /token \d+ (was dropped|is kept)/.test(t) && t.trim() !== b;
    }, coverBefore);
    result.cover_text = await text("cover-text");
    await page.getByRole("tab", { name: "Categories" }).click();

    // 3. The tab rule: the image stays loaded, the Video tab gets a video the browser cannot play.
    result.step = "tabs";
    await page.getByRole("tab", { name: "Video", exact: true }).click();
    await page.locator("#input-video input[type=file]").setInputFiles(video);
    await page.locator("#video-preview img").first().waitFor();
    result.preview_frames = await page.locator("#video-preview img").count();
    result.frames_info = await text("frames-info");
    await page.locator("#run").click();
    await summaryHas("Video tab");
    await answered();
    result.video_summary = await text("summary");
    result.video_legend = await text("legend");
    await page.getByRole("tab", { name: "Image", exact: true }).click();
    await page.locator("#run").click();
    await summaryHas("Image tab");
    await answered();
    result.image_summary = await text("summary");
    result.toasts_after_video = await toasts();

    // 4. An error clears the previous results; the next run clears the error.
    result.step = "errors";
    await page.locator("#question textarea").fill("   ");
    await page.locator("#run").click();
    await page.waitForFunction(() => [...document.querySelectorAll(".toast-body")]
      .some((t) => t.innerText.includes("type a question")));
    result.error_answer = await value("answer-pruned");
    result.error_summary = await text("summary");
    await page.locator("#question textarea").fill("which number is on the purple square");
    await page.locator("#run").click();
    await answered();
    await summaryHas("Speed-up");
    result.toasts_after_fix = await toasts();

    // 4b. The ratio ladder: five answers, thumbnails, a plot.
    result.step = "ladder";
    await page.locator("#ladder-run").click();
    await page.locator("#ladder-gallery img").nth(4).waitFor({ timeout: 90000 });
    await page.locator("#ladder-plot img").first().waitFor();
    result.ladder_thumbs = await page.locator("#ladder-gallery img").count();
    result.ladder_table = await text("ladder-table");
    await page.evaluate(() => document.querySelectorAll(".toast-close").forEach((b) => b.click()));
    await page.waitForTimeout(300);
    if (ladderShot) await page.locator("#result-tabs").screenshot({ path: ladderShot });
    await page.getByRole("tab", { name: "Categories" }).click();

    // 5. A video example: its tab is shown and its frames drawn.
    result.step = "example";
    const videoRow = page.locator("#examples").getByText("video:", { exact: false });
    result.example_frames = 0;
    if (await videoRow.count()) {
      await videoRow.first().click();
      await page.getByRole("tab", { name: "Video frames" }).click();
      await page.locator("#frames img").first().waitFor({ timeout: 90000 });
      result.example_frames = await page.locator("#frames img").count();
      result.example_pruned = await value("answer-pruned");
      result.example_tab = await page.getByRole("tab", { name: "Video", exact: true }).getAttribute("aria-selected");
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
