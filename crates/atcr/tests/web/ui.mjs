// The browser half of crates/atcr/tests/web_ui.rs: drives Debian's headless
// Chromium through Playwright's protocol client against `atcr serve`.
//
//   node ui.mjs SCENARIO.json   (WEB_TOOLS = where scripts/web-tools installed)
//
// For each page of the scenario: loads it (light, then dark colour scheme),
// waits for verification badges still "checking" to settle, saves a
// screenshot, runs axe-core, and reports what it saw (text, badges, console
// errors, axe violations, bytes). Then signs in, deletes a tag, creates and
// revokes an app password and signs out, with the keyboard where a person
// would use it. Prints one JSON document; the Rust test asserts on it.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(process.env.WEB_TOOLS, "package.json"));
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const out = { pages: [], flow: {} };

function watch(page) {
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  return errors;
}

async function settle(page) {
  // Badges still "checking" carry data-badge-api until the script has the
  // verdict (bounded: 45 s).
  await page.waitForFunction(
    () => document.querySelectorAll("[data-badge-api]").length === 0,
    null, { timeout: 45000, polling: 200 },
  );
}

async function axe(page) {
  // Evaluated through the DevTools protocol, which the page's CSP does not
  // govern (an injected <script> would be refused, as it should be).
  await page.evaluate(axeSource + ";0");
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
    targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
}

async function tabs(page, n) {
  const seen = [];
  for (let i = 0; i < n; i++) {
    await page.keyboard.press("Tab");
    seen.push(await page.evaluate(() => {
      const e = document.activeElement;
      return e ? `${e.tagName.toLowerCase()}:${(e.getAttribute("aria-label") || e.textContent || e.getAttribute("name") || "").trim().slice(0, 60)}` : "none";
    }));
  }
  return seen;
}

for (const p of scenario.pages) {
  const page = await context.newPage();
  const errors = watch(page);
  let bytes = 0;
  page.on("response", async (r) => {
    try { if (r.url().startsWith(scenario.base)) bytes += (await r.body()).length; } catch { /* redirects */ }
  });
  const resp = await page.goto(scenario.base + p.path, { waitUntil: "load" });
  if (p.settle) await settle(page);
  const report = {
    name: p.name,
    status: resp.status(),
    url: page.url(),
    title: await page.title(),
    h1: await page.locator("h1").first().innerText().catch(() => ""),
    text: (await page.locator("body").innerText()).slice(0, 50000),
    badges: await page.locator(".badge").allInnerTexts(),
    pwned: await page.evaluate(() => window.__pwned ?? null),
    injected: await page.evaluate(() => document.querySelectorAll("img[src='x'], script:not([src]), [onerror]").length),
    violations: await axe(page),
  };
  await page.screenshot({ path: path.join(scenario.shots, `${p.name}.png`), fullPage: true });
  await page.emulateMedia({ colorScheme: "dark" });
  report.dark_background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  report.dark_violations = await axe(page);
  await page.screenshot({ path: path.join(scenario.shots, `${p.name}-dark.png`), fullPage: true });
  await page.emulateMedia({ colorScheme: "light" });
  report.light_background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
  if (p.keyboard) {
    await page.goto(scenario.base + p.path, { waitUntil: "load" });
    report.tabs = await tabs(page, p.keyboard);
    // The skip link takes focus to the main content.
    await page.goto(scenario.base + p.path, { waitUntil: "load" });
    await page.keyboard.press("Tab");
    await page.keyboard.press("Enter");
    report.after_skip = await page.evaluate(() => document.activeElement?.id ?? "");
  }
  report.bytes = bytes;
  report.console_errors = errors;
  out.pages.push(report);
  await page.close();
}

// ---- signing in, deleting a tag, app passwords, signing out ----
if (scenario.signin) {
  const s = scenario.signin;
  const page = await context.newPage();
  const errors = watch(page);
  const flow = out.flow;
  await page.goto(scenario.base + "/signin");
  await page.fill("#handle", s.handle);
  await page.fill("#password", "not-the-password");
  await page.press("#password", "Enter");
  await page.waitForLoadState("load");
  flow.wrong_password = await page.locator("[role=alert]").innerText().catch(() => "");
  await page.fill("#handle", s.handle);
  await page.fill("#password", s.password);
  await page.press("#password", "Enter");
  await page.waitForURL("**/me");
  flow.me_h1 = await page.locator("h1").innerText();
  flow.cookies = (await context.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure }));
  flow.me_violations = await axe(page);
  await page.screenshot({ path: path.join(scenario.shots, "me.png"), fullPage: true });
  // Delete a tag with the keyboard: focus its button, press Enter.
  await page.locator(`button[aria-label="Delete tag ${s.delete}"]`).focus();
  await page.keyboard.press("Enter");
  await page.waitForURL("**/me?done=tag-deleted");
  flow.after_delete = await page.locator("main").innerText();
  // An app password: created (shown once), then revoked.
  await page.fill("#ap-name", "web-ui-test");
  await page.press("#ap-name", "Enter");
  await page.waitForLoadState("load");
  flow.created = await page.locator(".notice code").first().innerText().catch(() => "");
  await page.screenshot({ path: path.join(scenario.shots, "me-app-password.png"), fullPage: true });
  await page.locator('button[aria-label="Revoke app password web-ui-test"]').click();
  await page.waitForURL("**/me?done=password-revoked");
  flow.after_revoke = await page.locator("main").innerText();
  // Sign out from the header.
  await page.locator("header button", { hasText: "Sign out" }).click();
  await page.waitForLoadState("load");
  flow.after_signout_url = page.url();
  flow.after_signout_header = await page.locator("header").innerText();
  await page.goto(scenario.base + "/me");
  flow.me_after_signout_url = page.url();
  flow.console_errors = errors;
  await page.close();
}

await browser.close();
process.stdout.write(JSON.stringify(out));
