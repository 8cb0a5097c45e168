// herd's dashboard: swaps in what the server pushes (Server-Sent Events) and sends actions
// with the page's CSRF token. Everything shown is rendered and escaped by the server, or set
// as text here; nothing a process printed becomes markup.
"use strict";
const csrf = document.querySelector("meta[name=csrf]")?.content ?? "";

function flash(text, bad) {
  const f = document.getElementById("flash");
  if (!f) return;
  f.textContent = text;
  f.className = bad ? "bad" : "ok";
}

function listen(url, handlers) {
  const es = new EventSource(url);
  for (const [kind, f] of Object.entries(handlers)) {
    es.addEventListener(kind, (e) => f(e.data));
  }
  es.onopen = () => document.body.classList.remove("offline");
  es.onerror = () => document.body.classList.add("offline");
  return es;
}

function keepLast(list, n, fromTop) {
  while (list.children.length > n) {
    (fromTop ? list.lastElementChild : list.firstElementChild).remove();
  }
}

const apps = document.getElementById("apps-body");
if (apps) {
  listen(apps.dataset.stream, {
    apps: (html) => { apps.innerHTML = html; },
    cluster: (html) => {
      const c = document.getElementById("cluster-apps");
      if (c) c.innerHTML = html;
    },
  });
}

const log = document.getElementById("log");
if (log) {
  listen("/api/logs/" + encodeURIComponent(log.dataset.app), {
    log: (data) => {
      const chunk = JSON.parse(data);
      const span = document.createElement("span");
      span.dataset.instance = chunk.instance;
      span.textContent = chunk.text;
      log.appendChild(span);
      keepLast(log, 500, false);
      log.scrollTop = log.scrollHeight;
    },
  });
}

const events = document.getElementById("events");
if (events) {
  const app = events.dataset.app;
  if (app) events.replaceChildren();
  listen("/api/events" + (app ? "?app=" + encodeURIComponent(app) : ""), {
    event: (data) => {
      const e = JSON.parse(data);
      const li = document.createElement("li");
      li.textContent = e.text;
      li.dataset.kind = e.event?.event ?? "";
      events.prepend(li);
      keepLast(events, 300, true);
    },
  });
}

async function post(url) {
  const r = await fetch(url, { method: "POST", headers: { "x-herd-csrf": csrf } });
  const text = (await r.text()).trim();
  flash(r.ok ? text : `${r.status}: ${text}`, !r.ok);
}

document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-action], button[data-scale]");
  if (!b) return;
  if (b.dataset.action) {
    post(b.dataset.action);
  } else {
    const n = document.getElementById("scale")?.value ?? "";
    post(b.dataset.scale + "?instances=" + encodeURIComponent(n));
  }
});
