// Drives Debian's chromium (playwright-core) against a real herd daemon's dashboard and checks
// it against what the CLI prints. Called by tests/dashboard.rs with one JSON argument:
//   { base, link, herd, home, viewer_token, shots, app, cluster }
// Exits non-zero with the failed check on stderr; saves a screenshot of every page it checks.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";

const cfg = JSON.parse(process.argv[2]);
mkdirSync(cfg.shots, { recursive: true });

function herd(...args) {
  const out = execFileSync(cfg.herd, args, {
    env: { ...process.env, HERD_HOME: cfg.home, HERD_HTTP_LISTEN: "" },
    encoding: "utf8",
  });
  return JSON.parse(out);
}

function check(ok, what, detail) {
  if (!ok) {
    throw new Error(`${what}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
  }
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function shot(page, name) {
  await page.screenshot({ path: `${cfg.shots}/${name}.png`, fullPage: true });
}

/// The apps table's rows as the page shows them now.
async function rows(page) {
  return page.$$eval("#apps-body tr[data-app]", (trs) =>
    trs.map((tr) => ({
      name: tr.dataset.app,
      instance: Number(tr.dataset.instance),
      pid: tr.dataset.pid === "-" ? null : Number(tr.dataset.pid),
      status: tr.dataset.status,
      restarts: Number(tr.dataset.restarts),
    })),
  );
}

function fromPs(ps) {
  return ps.map((i) => ({
    name: i.name, instance: i.instance, pid: i.pid, status: i.status, restarts: i.restarts,
  }));
}

const sortRows = (r) => [...r].sort((a, b) => (a.name + a.instance).localeCompare(b.name + b.instance));

try {
  // 1. A stranger: the login form and nothing else.
  const stranger = await (await browser.newContext()).newPage();
  const r = await stranger.goto(cfg.base + "/");
  check(r.status() === 401, "without a session / answers 401", r.status());
  check(await stranger.locator("form#login").isVisible(), "without a session the login form shows");
  const html = await stranger.content();
  check(!html.includes(cfg.app) && !html.includes("data-pid"), "without a session no app leaks");
  for (const path of ["/api/stream", "/api/events", `/api/logs/${cfg.app}`, `/app/${cfg.app}`, "/nodes"]) {
    const res = await stranger.request.get(cfg.base + path);
    const body = await res.text();
    check(res.status() === 401 && !body.includes("pid"), `without a session ${path} is refused`, res.status());
  }
  const forged = await stranger.request.post(`${cfg.base}/api/apps/${cfg.app}/restart`);
  check(forged.status() === 401, "without a session an action is refused", forged.status());
  await shot(stranger, "login");

  // 2. The one-time link signs in as admin, once.
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(cfg.link);
  check(new URL(page.url()).pathname === "/", "the link lands on the apps page", page.url());
  check((await page.locator("#role").textContent()) === "admin", "the link's session is admin");
  const again = await (await browser.newContext()).newPage();
  const spent = await again.goto(cfg.link);
  check(spent.status() === 401, "a spent link signs nobody in", spent.status());
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === "herd_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict", session);

  // 3. The apps table is `herd ps --json`.
  await page.waitForFunction(() => document.querySelectorAll("#apps-body tr[data-app]").length > 0);
  const ps = fromPs(herd("ps", "--json"));
  check(JSON.stringify(sortRows(await rows(page))) === JSON.stringify(sortRows(ps)), "the apps table equals herd ps --json", { page: await rows(page), ps });
  const bytes = await page.evaluate(() =>
    performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
      .reduce((n, e) => n + (e.transferSize || e.encodedBodySize || 0), 0));
  check(bytes < 300 * 1024, `the page weighs under 300 KB (${bytes} bytes)`);
  await shot(page, "apps");

  if (cfg.cluster) {
    const apps = herd("cluster", "apps", "--json");
    await page.waitForFunction(() => document.querySelectorAll("#cluster-apps tr[data-app]").length > 0);
    const shown = await page.$$eval("#cluster-apps tr[data-app]", (trs) =>
      trs.map((tr) => ({ name: tr.dataset.app, desired: Number(tr.dataset.desired), placed: Number(tr.dataset.placed) })));
    const want = apps.map((a) => ({ name: a.name, desired: a.desired, placed: Object.keys(a.assignments).length }));
    check(JSON.stringify(shown) === JSON.stringify(want), "the cluster apps table equals herd cluster apps --json", { shown, want });

    const nodes = await ctx.newPage();
    await nodes.goto(cfg.base + "/nodes");
    const uptime = herd("cluster", "uptime", "--json", "--days", "90");
    const cells = await nodes.$$eval("#nodes tr[data-node]", (trs) =>
      trs.map((tr) => ({
        addr: tr.dataset.addr,
        cells: [...tr.querySelectorAll(".day")].map((d) => d.dataset.percent === "" ? null : Number(d.dataset.percent)),
      })));
    check(cells.length === uptime.nodes.length, "one uptime row per node", { cells: cells.length, cli: uptime.nodes.length });
    for (const n of uptime.nodes) {
      // Node ids are 64-bit (past JavaScript's exact integers): rows are matched by address.
      const row = cells.find((c) => c.addr === n.addr);
      check(row && row.cells.length === n.days.length, `node ${n.addr}: as many day cells as the CLI's days (${n.days.length})`);
      const same = n.days.every((d, i) => {
        const p = row.cells[i];
        // The sample counts move while we look: allow the newest day a little drift.
        return d.uptime_percent === null ? p === null : Math.abs(p - d.uptime_percent) < (i === n.days.length - 1 ? 1.0 : 0.0001);
      });
      check(same, `node ${n.addr}: every day's percentage equals herd cluster uptime --json`, { page: row.cells.slice(-3), cli: n.days.slice(-3) });
    }
    const title = await nodes.locator(".day.ok, .day.warn, .day.bad").last().getAttribute("title");
    check(/%/.test(title ?? ""), "hovering a day tells the day and the percentage", title);
    await shot(nodes, "nodes");
  }

  // 4. SIGKILL an instance: the table shows its new process without a reload, within 3 s.
  // A cluster's instances run under `app@index` on their node.
  const victim = herd("ps", "--json").find((i) => i.name === cfg.app || i.name.startsWith(cfg.app + "@"));
  await page.evaluate(() => { window.__noReload = true; });
  const killedAt = Date.now();
  process.kill(victim.pid, "SIGKILL");
  await page.waitForFunction(
    ({ app, instance, pid, restarts }) => {
      const tr = document.querySelector(`#apps-body tr[data-app="${app}"][data-instance="${instance}"]`);
      return tr && tr.dataset.status === "running" && tr.dataset.pid !== String(pid) && Number(tr.dataset.restarts) > restarts;
    },
    { app: victim.name, instance: victim.instance, pid: victim.pid, restarts: victim.restarts },
    { timeout: 3000 },
  );
  check(await page.evaluate(() => window.__noReload === true), "the page was not reloaded");
  console.log(`  back to running on the page ${Date.now() - killedAt} ms after SIGKILL`);
  check(true, "a killed instance shows running again with a new pid within 3 s");
  await shot(page, "after-kill");

  // 5. The log pane shows a line printed under 2 s earlier (the app prints `tick <unix s>`).
  const detail = await ctx.newPage();
  await detail.goto(`${cfg.base}/app/${victim.name}`);
  await detail.waitForFunction(
    () => {
      const now = Date.now() / 1000;
      return [...document.querySelectorAll("#log span")].some((s) =>
        [...s.textContent.matchAll(/tick (\d+)/g)].some((m) => now - Number(m[1]) < 2));
    },
    null,
    { timeout: 5000 },
  );
  check(true, "the log pane shows a line printed under 2 s ago");
  await detail.waitForFunction(() => document.querySelectorAll("#events li").length > 0, null, { timeout: 5000 });
  check(true, "the app page lists the app's events");
  await shot(detail, "app");

  // 6. Actions need the page's CSRF token.
  const noCsrf = await page.request.post(`${cfg.base}/api/apps/${cfg.app}/restart`);
  check(noCsrf.status() === 403, "an admin POST without the CSRF token is refused", noCsrf.status());

  // 7. A viewer: no action buttons, and a forged POST (with its own CSRF token) gets 403.
  const vctx = await browser.newContext();
  const viewer = await vctx.newPage();
  await viewer.goto(cfg.base + "/login");
  await viewer.fill("#token", cfg.viewer_token);
  await viewer.click("button[type=submit]");
  await viewer.waitForURL(cfg.base + "/");
  check((await viewer.locator("#role").textContent()) === "viewer", "the token's session is a viewer");
  await viewer.waitForFunction(() => document.querySelectorAll("#apps-body tr[data-app]").length > 0);
  check((await viewer.locator("button[data-action]").count()) === 0, "a viewer sees no action buttons");
  const status = await viewer.evaluate(async (app) => {
    const csrf = document.querySelector("meta[name=csrf]").content;
    const r = await fetch(`/api/apps/${app}/restart`, { method: "POST", headers: { "x-herd-csrf": csrf } });
    return r.status;
  }, victim.name);
  check(status === 403, "a viewer's forged restart gets 403", status);
  const before = herd("ps", "--json").find((i) => i.name === victim.name && i.instance === victim.instance);
  check(before.pid === (await rows(page)).find((x) => x.instance === victim.instance).pid, "nothing restarted");
  await shot(viewer, "viewer");

  // 8. An admin's button works, and the event feed shows it live.
  const feed = await ctx.newPage();
  await feed.goto(cfg.base + "/events");
  await feed.waitForFunction(() => document.querySelectorAll("#events li").length > 0);
  await page.bringToFront();
  await page.click(`#apps-body tr[data-app="${victim.name}"] button[data-action$="/restart"]`);
  await page.waitForFunction(() => /restart/.test(document.getElementById("flash").textContent));
  await feed.waitForFunction(
    (app) => [...document.querySelectorAll("#events li")].some((li) => li.dataset.kind === "restart_requested" || (li.textContent.includes(app) && /restart/.test(li.textContent))),
    victim.name,
    { timeout: 5000 },
  );
  check(true, "the restart button restarts and the event feed shows it live");
  await shot(feed, "events");
  await browser.close();
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  await browser.close();
  process.exit(1);
}
