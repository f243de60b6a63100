// Cagent admin UI: a small single-page app over the admin API. No framework:
// each page is a function that renders into <main> and returns a cleanup.
import { ago, confirmModal, fetchJSON, fill, h, table, toast } from "../../../web/shared/ui";
import "@xterm/xterm/css/xterm.css";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";

// ---- API ----------------------------------------------------------------

let csrf = "";

async function api(method: string, path: string, body?: any): Promise<any> {
  const headers: Record<string, string> = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  return fetchJSON(method, path, body, headers, path === "/api/login" ? undefined : () => {
    csrf = "";
    route();
  });
}

function fmtBytes(n: number): string {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function fmtTime(ts: string): string {
  const d = new Date(ts);
  return isNaN(d.getTime()) ? ts : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---- shell and routing --------------------------------------------------

const pages: Record<string, { title: string; render: (main: HTMLElement) => (() => void) | void }> = {
  dashboard: { title: "Dashboard", render: dashboard },
  config: { title: "Configuration", render: configPage },
  logs: { title: "Logs", render: logsPage },
  traffic: { title: "Traffic", render: trafficPage },
  terminal: { title: "Terminal", render: terminalPage },
};

let cleanup: (() => void) | void;

async function route() {
  if (cleanup) cleanup();
  cleanup = undefined;
  const app = document.getElementById("app")!;
  app.replaceChildren();
  if (!csrf) {
    try {
      const r = await fetch("/api/session", { credentials: "same-origin" });
      if (r.ok) csrf = (await r.json()).csrf;
    } catch {
      /* offline */
    }
  }
  if (!csrf) {
    loginPage(app);
    return;
  }
  const name = (location.hash.replace(/^#\/?/, "") || "dashboard").split("?")[0];
  const page = pages[name] || pages.dashboard;
  const nav = h(
    "nav",
    {},
    Object.entries(pages).map(([k, p]) => h("a", { href: `#/${k}`, id: `nav-${k}`, class: p === page ? "active" : "" }, p.title)),
  );
  const main = h("main", { id: `page-${name}` });
  app.append(
    h(
      "header",
      { class: "top" },
      h("span", { class: "brand" }, "cagent"),
      nav,
      h("span", { class: "spacer" }),
      h(
        "button",
        {
          id: "logout",
          onclick: async () => {
            await api("POST", "/api/logout").catch(() => {});
            csrf = "";
            route();
          },
        },
        "Log out",
      ),
    ),
    main,
  );
  document.title = `${page.title} · Cagent admin`;
  cleanup = page.render(main);
}

window.addEventListener("hashchange", route);

function loginPage(app: HTMLElement) {
  const input = h("input", { id: "token", type: "password", placeholder: "cagent_admin_…", autocomplete: "current-password" }) as HTMLInputElement;
  const msg = h("div", { class: "errors", id: "login-error" });
  const submit = async (ev: Event) => {
    ev.preventDefault();
    msg.textContent = "";
    try {
      const r = await api("POST", "/api/login", { token: input.value.trim() });
      csrf = r.csrf;
      route();
    } catch (e: any) {
      msg.textContent = e.message;
    }
  };
  app.append(
    h(
      "form",
      { class: "card login", onsubmit: submit },
      h("h2", {}, "Cagent admin"),
      h("p", { class: "dim" }, "Paste the admin token that `cagent up` printed at first start, or make a new one with `cagent admin token --rotate`."),
      input,
      msg,
      h("button", { id: "login", class: "primary", type: "submit" }, "Log in"),
    ),
  );
  input.focus();
}

// ---- dashboard ----------------------------------------------------------

function dashboard(main: HTMLElement) {
  const comps = h("div", { class: "grid", id: "components" });
  const pol = h("div", { class: "card", id: "policy-status" });
  const actions = h(
    "div",
    { class: "row" },
    ...(["start", "stop", "restart"] as const).map((a) =>
      h("button", { id: `sandbox-${a}`, onclick: () => act(a) }, a[0].toUpperCase() + a.slice(1)),
    ),
    h("button", { id: "sandbox-wipe", class: "danger", onclick: () => wipe() }, "Wipe…"),
  );
  main.append(h("div", { class: "card" }, h("h2", {}, "Agent sandbox"), actions), comps, pol);

  async function act(a: string, body?: any) {
    try {
      await api("POST", `/api/sandbox/${a}`, body);
      toast(`sandbox: ${a} done`);
    } catch (e: any) {
      toast(`sandbox ${a} failed: ${e.message}`);
    }
    load();
  }
  async function wipe() {
    const cb = h("input", { type: "checkbox", id: "wipe-workspace" }) as HTMLInputElement;
    const ok = await confirmModal(
      "Wipe the sandbox?",
      [h("p", {}, "The sandbox is destroyed and created anew. Processes in it are killed."), h("label", { class: "row" }, cb, "Also delete everything in the workspace")],
      "Wipe",
    );
    if (ok) act("wipe", { empty_workspace: cb.checked });
  }
  async function load() {
    let st: any;
    try {
      st = await api("GET", "/api/status");
    } catch {
      return;
    }
    comps.replaceChildren(
      ...st.components.map((c: any) =>
        h(
          "div",
          { class: "card", id: `component-${c.name}` },
          h("h2", {}, c.name, " ", h("span", { class: `badge ${c.state}` }, c.state), " ", h("span", { class: `badge ${c.healthy ? "ok" : c.state === "stopped" ? "stopped" : "bad"}` }, c.healthy ? "healthy" : "unhealthy")),
          h(
            "dl",
            { class: "kv" },
            h("dt", {}, "since"),
            h("dd", {}, c.since ? ago(c.since) : "–"),
            h("dt", {}, "restarts"),
            h("dd", {}, c.restarts),
            c.message && [h("dt", {}, "status"), h("dd", {}, c.message)],
            c.last_error && [h("dt", {}, "last error"), h("dd", { class: "errors" }, c.last_error)],
            Object.entries(c.info || {}).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]),
          ),
        ),
      ),
    );
    const p = st.policy;
    fill(
      pol,
      h("h2", {}, "Policy ", h("span", { class: `badge ${p.error ? "bad" : "ok"}` }, p.error ? "file invalid" : "applied")),
      h("dl", { class: "kv" }, h("dt", {}, "file"), h("dd", {}, p.file), h("dt", {}, "domains"), h("dd", {}, p.domains), h("dt", {}, "enforcement"), h("dd", {}, p.enforcement || "enforce")),
      p.error && h("p", { class: "errors" }, p.error),
      p.errors && errorList(p.errors),
      !st.ui_built && h("p", { class: "errors" }, "This binary was built without the web UI."),
    );
  }
  load();
  const t = setInterval(load, 2000);
  return () => clearInterval(t);
}

function errorText(e: any): string {
  const pos = e.line ? `${e.line}:${e.col}: ` : "";
  return `${pos}${e.path ? e.path + ": " : ""}${e.message}`;
}

function errorList(errs: any[], onClick?: (e: any) => void): HTMLElement {
  return h("ul", { class: "errors", id: "config-errors" }, ...errs.map((e) => h("li", { onclick: () => onClick && onClick(e) }, errorText(e))));
}

// ---- configuration ------------------------------------------------------

function configPage(main: HTMLElement) {
  let tab = location.hash.includes("yaml") ? "yaml" : "domains";
  const tabs = h("div", { class: "tabs" });
  const body = h("div");
  const status = h("div", { id: "config-status" });
  main.append(h("div", { class: "card" }, tabs, status, body));
  const show = () => {
    tabs.replaceChildren(
      h("button", { id: "tab-domains", class: tab === "domains" ? "active" : "", onclick: () => ((tab = "domains"), show()) }, "Domains"),
      h("button", { id: "tab-yaml", class: tab === "yaml" ? "active" : "", onclick: () => ((tab = "yaml"), show()) }, "YAML"),
    );
    body.replaceChildren();
    status.replaceChildren();
    api("GET", "/api/config").then((cfg) => {
      if (cfg.policy.error) status.append(h("p", { class: "errors" }, cfg.policy.error), errorList(cfg.policy.errors || []));
      if (tab === "domains") domainsEditor(body, cfg);
      else yamlEditor(body, cfg);
    });
  };
  show();
}

const fieldNames = ["domain", "alias", "ports", "timeout", "read_only", "allowed_paths", "denied_paths", "rate_limit", "egress_limit", "tls_intercept", "allow_private", "credential", "enabled"];

function domainsEditor(body: HTMLElement, cfg: any) {
  const domains: any[] = cfg.domains || [];
  const list = h("div", { id: "domains" });
  const top = h("div", { id: "domains-errors" });
  const splitList = (s: string) => s.split(/[,\n]/).map((x) => x.trim()).filter(Boolean);

  function card(d: any, i: number): HTMLElement {
    const upd = (f: (d: any) => void) => (ev: Event) => {
      f(d);
      ev.stopPropagation();
    };
    const inp = (field: string, val: any, set: (v: string) => void, ph = "") =>
      h("input", { "data-field": field, value: val ?? "", placeholder: ph, oninput: (ev: Event) => set((ev.target as HTMLInputElement).value) });
    const chk = (field: string, label: string, val: boolean, set: (v: boolean) => void) =>
      h("label", { class: "check" }, h("input", { type: "checkbox", "data-field": field, checked: val, onchange: (ev: Event) => set((ev.target as HTMLInputElement).checked) }), label);
    const cred = d.credential || {};
    const credSource = cred.secret !== undefined && cred.secret !== "" ? "secret" : cred.env ? "env" : cred.file ? "file" : "secret";
    const credName = cred[credSource] || "";
    const setCred = (k: string, v: string) => {
      d.credential = d.credential || {};
      d.credential[k] = v;
    };
    const srcSel = h(
      "select",
      {
        "data-field": "credential.source",
        onchange: (ev: Event) => {
          const c = d.credential || {};
          const name = c.env || c.file || c.secret || "";
          delete c.env;
          delete c.file;
          delete c.secret;
          c[(ev.target as HTMLSelectElement).value] = name;
          d.credential = c;
        },
      },
      ...["secret", "env", "file"].map((s) => h("option", { value: s, selected: s === credSource }, s)),
    );
    return h(
      "div",
      { class: "domain", "data-index": i },
      h(
        "div",
        { class: "row" },
        h("strong", {}, d.domain || "(new domain)"),
        h("span", { class: "spacer", style: "flex:1" }),
        h("button", { class: "danger", "data-action": "remove", onclick: () => (domains.splice(i, 1), render()) }, "Remove"),
      ),
      h(
        "div",
        { class: "fields" },
        h("label", {}, "Domain (exact or *.example.com)", inp("domain", d.domain, (v) => (d.domain = v), "api.example.com")),
        h("label", {}, "Alias (ALIAS.devbox.local)", inp("alias", d.alias, (v) => (d.alias = v))),
        h("label", {}, "Ports (default 80, 443)", inp("ports", (d.ports || []).join(", "), (v) => (d.ports = splitList(v).map(Number)), "443")),
        h("label", {}, "Timeout", inp("timeout", d.timeout, (v) => (d.timeout = v), "60s")),
        h(
          "label",
          {},
          "Methods",
          h(
            "select",
            { "data-field": "read_only", onchange: (ev: Event) => (d.read_only = (ev.target as HTMLSelectElement).value === "ro") },
            h("option", { value: "all", selected: !d.read_only }, "all methods"),
            h("option", { value: "ro", selected: !!d.read_only }, "read-only (GET, HEAD, OPTIONS)"),
          ),
        ),
        h("label", {}, "Allowed paths (comma-separated)", inp("allowed_paths", (d.allowed_paths || []).join(", "), (v) => (d.allowed_paths = splitList(v)), "/v1/*")),
        h("label", {}, "Denied paths", inp("denied_paths", (d.denied_paths || []).join(", "), (v) => (d.denied_paths = splitList(v)))),
        h(
          "label",
          {},
          "Rate limit (requests/min, burst)",
          h(
            "div",
            { class: "row" },
            h("input", { "data-field": "rate_limit.requests_per_minute", style: "width:7em", value: d.rate_limit?.requests_per_minute ?? "", placeholder: "default", oninput: (ev: Event) => { const v = (ev.target as HTMLInputElement).value; d.rate_limit = d.rate_limit || {}; d.rate_limit.requests_per_minute = v === "" ? 0 : Number(v); } }),
            h("input", { "data-field": "rate_limit.burst_size", style: "width:6em", value: d.rate_limit?.burst_size ?? "", placeholder: "burst", oninput: (ev: Event) => { const v = (ev.target as HTMLInputElement).value; d.rate_limit = d.rate_limit || {}; d.rate_limit.burst_size = v === "" ? 0 : Number(v); } }),
          ),
        ),
        h("label", {}, "Egress budget per hour", inp("egress_limit", d.egress_limit, (v) => (d.egress_limit = v), "default, e.g. 10MiB")),
        h(
          "label",
          {},
          "Credential header / format",
          h(
            "div",
            { class: "row" },
            h("input", { "data-field": "credential.header", style: "width:10em", value: cred.header ?? "", placeholder: "Authorization", oninput: (ev: Event) => setCred("header", (ev.target as HTMLInputElement).value) }),
            h("input", { "data-field": "credential.format", style: "width:10em", value: cred.format ?? "", placeholder: "Bearer {value}", oninput: (ev: Event) => setCred("format", (ev.target as HTMLInputElement).value) }),
          ),
        ),
        h(
          "label",
          {},
          "Credential source (a name, never the value; sent over TLS only)",
          h(
            "div",
            { class: "row" },
            srcSel,
            h("input", { "data-field": "credential.name", style: "width:12em", value: credName, placeholder: "NAME", oninput: (ev: Event) => setCred((srcSel as HTMLSelectElement).value, (ev.target as HTMLInputElement).value) }),
          ),
        ),
        chk("tls_intercept", "TLS interception", !!d.tls_intercept, (v) => (d.tls_intercept = v)),
        chk("allow_private", "Allow private addresses", !!d.allow_private, (v) => (d.allow_private = v)),
        chk("enabled", "Enabled", d.enabled !== false, (v) => (d.enabled = v ? undefined : false)),
      ),
      h("div", { class: "ferr", "data-errors": i }),
    );
    void upd;
  }

  function render() {
    list.replaceChildren(...domains.map(card));
  }

  function clean(d: any): any {
    const out: any = {};
    for (const [k, v] of Object.entries(d)) {
      if (v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) continue;
      out[k] = v;
    }
    if (out.credential) {
      const c: any = {};
      for (const [k, v] of Object.entries(out.credential)) if (v !== "" && v !== undefined) c[k] = v;
      out.credential = Object.keys(c).length ? c : undefined;
    }
    return out;
  }

  async function save() {
    top.replaceChildren();
    list.querySelectorAll("[data-errors]").forEach((e) => e.replaceChildren());
    list.querySelectorAll(".domain").forEach((e) => e.classList.remove("invalid"));
    try {
      const r = await api("PUT", "/api/config/domains", { domains: domains.map(clean) });
      domains.splice(0, domains.length, ...(r.domains || []));
      render();
      top.append(h("p", { class: "ok-msg", id: "save-ok" }, "Saved and applied."));
    } catch (e: any) {
      const errs: any[] = e.body?.errors || [];
      const general: any[] = [];
      for (const er of errs) {
        const m = /^domains\[(\d+)\]/.exec(er.path || "");
        const slot = m && list.querySelector(`[data-errors="${m[1]}"]`);
        if (slot) {
          slot.append(h("div", {}, `${er.path}: ${er.message}`));
          slot.parentElement!.classList.add("invalid");
          for (const f of fieldNames) {
            if ((er.path || "").startsWith(`domains[${m![1]}].${f}`)) {
              (slot.parentElement!.querySelector(`[data-field^="${f}"]`) as HTMLElement | null)?.setAttribute("aria-invalid", "true");
            }
          }
        } else general.push(er);
      }
      top.append(h("p", { class: "errors" }, e.message), errorList(general));
    }
  }

  if (cfg.domains_error) top.append(h("p", { class: "errors" }, `The file cannot be edited here (${cfg.domains_error}); use the YAML tab.`));
  body.append(
    h(
      "div",
      { class: "row", style: "margin-bottom:10px" },
      h("button", { id: "add-domain", onclick: () => (domains.push({ domain: "" }), render(), (list.lastElementChild?.querySelector('[data-field="domain"]') as HTMLInputElement)?.focus()) }, "+ Add domain"),
      h("button", { id: "save-domains", class: "primary", onclick: save }, "Validate and save"),
      h("span", { class: "dim" }, "Saving validates the whole policy and writes cagent.yaml atomically; the data plane applies it at once."),
    ),
    top,
    list,
  );
  render();
}

function yamlEditor(body: HTMLElement, cfg: any) {
  const ta = h("textarea", { id: "yaml", spellcheck: "false", value: cfg.yaml }) as HTMLTextAreaElement;
  const gutter = h("div", { class: "gutter" });
  const out = h("div", { id: "yaml-result" });
  let errLines = new Set<number>();
  const paintGutter = () => {
    const n = ta.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("div", { class: errLines.has(i + 1) ? "err" : "" }, errLines.has(i + 1) ? `● ${i + 1}` : i + 1)));
    gutter.scrollTop = ta.scrollTop;
  };
  const jump = (e: any) => {
    if (!e.line) return;
    const lines = ta.value.split("\n");
    let off = 0;
    for (let i = 0; i < e.line - 1 && i < lines.length; i++) off += lines[i].length + 1;
    off += Math.max(0, (e.col || 1) - 1);
    ta.focus();
    ta.setSelectionRange(off, off);
    ta.scrollTop = Math.max(0, (e.line - 5) * 18);
  };
  const showErrors = (errs: any[], msg: string) => {
    errLines = new Set(errs.filter((e) => e.line).map((e) => e.line));
    paintGutter();
    out.replaceChildren(h("p", { class: "errors" }, msg), errorList(errs, jump));
  };
  let timer: any;
  const validate = async () => {
    const r = await api("POST", "/api/config/validate", { yaml: ta.value });
    if (r.valid) {
      errLines = new Set();
      paintGutter();
      out.replaceChildren(h("p", { class: "ok-msg", id: "yaml-valid" }, "Valid."));
    } else showErrors(r.errors, `${r.errors.length} problem(s):`);
    return r.valid;
  };
  ta.addEventListener("input", () => {
    paintGutter();
    clearTimeout(timer);
    timer = setTimeout(validate, 400);
  });
  ta.addEventListener("scroll", () => (gutter.scrollTop = ta.scrollTop));
  ta.addEventListener("keydown", (ev) => {
    if (ev.key === "Tab") {
      ev.preventDefault();
      ta.setRangeText("  ", ta.selectionStart, ta.selectionEnd, "end");
    }
  });
  const save = async () => {
    try {
      const r = await api("PUT", "/api/config", { yaml: ta.value });
      ta.value = r.yaml;
      errLines = new Set();
      paintGutter();
      out.replaceChildren(h("p", { class: "ok-msg", id: "save-ok" }, "Saved and applied."));
    } catch (e: any) {
      showErrors(e.body?.errors || [], e.message);
    }
  };
  body.append(
    h(
      "div",
      { class: "row", style: "margin-bottom:10px" },
      h("button", { id: "validate-yaml", onclick: validate }, "Validate"),
      h("button", { id: "save-yaml", class: "primary", onclick: save }, "Save"),
      h("span", { class: "dim" }, cfg.policy.file),
    ),
    out,
    h("div", { class: "editor" }, gutter, ta),
  );
  paintGutter();
}

// ---- logs ---------------------------------------------------------------

function eventDomain(e: any): string {
  return e.host || (e.qname || "").replace(/\.$/, "");
}

function eventDetail(e: any): string {
  switch (e.type) {
    case "http":
    case "connect":
      return [e.method, e.scheme && e.host ? `${e.scheme}://${e.host}${e.port && e.port !== 80 && e.port !== 443 ? ":" + e.port : ""}${e.path || ""}` : e.path, e.status ? `→ ${e.status}` : "", e.bytes_up || e.bytes_down ? `↑${fmtBytes(e.bytes_up || 0)} ↓${fmtBytes(e.bytes_down || 0)}` : "", e.credential ? `cred:${e.credential}` : ""].filter(Boolean).join(" ");
    case "dns":
      return [e.qtype, e.qname, e.rcode, (e.answer || []).join(",")].filter(Boolean).join(" ");
    default:
      return [e.action, e.actor, e.detail ? Object.entries(e.detail).map(([k, v]) => `${k}=${v}`).join(" ") : ""].filter(Boolean).join(" ");
  }
}

function logsPage(main: HTMLElement) {
  const sel = (id: string, opts: [string, string][]) => h("select", { id }, ...opts.map(([v, l]) => h("option", { value: v }, l))) as HTMLSelectElement;
  const type = sel("f-type", [["", "all types"], ["http", "http"], ["connect", "connect"], ["dns", "dns"], ["sandbox", "sandbox"], ["command", "command"], ["admin", "admin"]]);
  const decision = sel("f-decision", [["", "all decisions"], ["allow", "allow"], ["deny", "deny"], ["report", "report"]]);
  const since = sel("f-since", [["15m", "last 15 min"], ["1h", "last hour"], ["24h", "last 24 h"], ["", "all kept"]]);
  const domain = h("input", { id: "f-domain", placeholder: "domain contains…" }) as HTMLInputElement;
  const text = h("input", { id: "f-text", placeholder: "path, reason…" }) as HTMLInputElement;
  const live = h("input", { id: "f-live", type: "checkbox", checked: true }) as HTMLInputElement;
  const count = h("span", { class: "dim", id: "log-count" });
  const tbody = h("tbody", { id: "log-rows" });
  main.append(
    h(
      "div",
      { class: "card" },
      h("div", { class: "row filters" }, type, decision, domain, text, since, h("label", { class: "row" }, live, "live tail"), count),
      h("div", { class: "logs-wrap" }, table({ class: "logs" }, ["time", "type", "decision", "domain", "detail", "reason"], tbody)),
    ),
  );
  const row = (e: any) =>
    h(
      "tr",
      { "data-type": e.type, "data-domain": eventDomain(e) },
      h("td", { title: e.ts }, fmtTime(e.ts)),
      h("td", {}, e.type),
      h("td", {}, e.decision ? h("span", { class: `badge ${e.decision}` }, e.decision) : ""),
      h("td", {}, eventDomain(e)),
      h("td", {}, eventDetail(e)),
      h("td", { class: "dim" }, [e.error, e.reason].filter(Boolean).join(": ")),
    );
  let es: EventSource | null = null;
  const params = () => {
    const p = new URLSearchParams();
    if (type.value) p.set("type", type.value);
    if (decision.value) p.set("decision", decision.value);
    if (domain.value) p.set("domain", domain.value);
    if (text.value) p.set("q", text.value);
    return p;
  };
  const load = async () => {
    const p = params();
    if (since.value) p.set("since", since.value);
    p.set("limit", "1000");
    const r = await api("GET", `/api/logs?${p}`);
    tbody.replaceChildren(...r.events.slice().reverse().map(row));
    count.textContent = `${r.events.length} events`;
    es?.close();
    es = null;
    if (live.checked) {
      es = new EventSource(`/api/logs/stream?${params()}`);
      delete tbody.dataset.live;
      es.onopen = () => (tbody.dataset.live = "1");
      es.onmessage = (m) => {
        tbody.prepend(row(JSON.parse(m.data)));
        while (tbody.children.length > 2000) tbody.lastElementChild!.remove();
        count.textContent = `${tbody.children.length} events (live)`;
      };
    }
  };
  let t: any;
  for (const el of [type, decision, since, live]) el.addEventListener("change", load);
  for (const el of [domain, text])
    el.addEventListener("input", () => {
      clearTimeout(t);
      t = setTimeout(load, 300);
    });
  load();
  return () => es?.close();
}

// ---- traffic ------------------------------------------------------------

function chart(series: any[], bucketSeconds: number, width: number): SVGElement {
  const W = Math.max(300, width),
    H = 180,
    P = 28;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const max = Math.max(0.001, ...series.map((b) => b.rps));
  const x = (i: number) => P + (i * (W - P - 4)) / Math.max(1, series.length - 1);
  const y = (v: number) => H - P + 4 - (v / max) * (H - P - 8);
  const path = (key: string) => series.map((b, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(key === "rps" ? b.rps : b[key] / bucketSeconds).toFixed(1)}`).join("");
  const add = (tag: string, attrs: Record<string, string>, text?: string) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text) el.textContent = text;
    svg.append(el);
  };
  add("line", { x1: String(P), y1: String(H - P + 4), x2: String(W), y2: String(H - P + 4), stroke: "#2a323c" });
  add("text", { x: "2", y: "12", fill: "#8a96a3", "font-size": "11" }, `${max.toFixed(2)}/s`);
  add("text", { x: "2", y: String(H - P + 4), fill: "#8a96a3", "font-size": "11" }, "0");
  if (series.length) {
    add("text", { x: String(P), y: String(H - 6), fill: "#8a96a3", "font-size": "11" }, new Date(series[0].t).toLocaleTimeString([], { hour12: false }));
    add("text", { x: String(W - 60), y: String(H - 6), fill: "#8a96a3", "font-size": "11" }, new Date(series[series.length - 1].t).toLocaleTimeString([], { hour12: false }));
  }
  add("path", { d: path("rps"), fill: "none", stroke: "#4aa3ff", "stroke-width": "2" });
  add("path", { d: path("denied"), fill: "none", stroke: "#f85149", "stroke-width": "1.5" });
  add("path", { d: path("errors"), fill: "none", stroke: "#d29922", "stroke-width": "1.5", "stroke-dasharray": "4 3" });
  return svg;
}

function bar(frac: number): HTMLElement {
  const pct = Math.min(100, Math.max(0, frac * 100));
  return h("div", { class: "bar", title: `${pct.toFixed(0)}%` }, h("div", { class: pct >= 90 ? "hot" : "", style: `width:${pct}%` }));
}

function trafficPage(main: HTMLElement) {
  const windowSel = h("select", { id: "t-window" }, ...["5m", "15m", "1h", "6h", "24h"].map((w) => h("option", { value: w, selected: w === "15m" }, `last ${w}`))) as HTMLSelectElement;
  const content = h("div", { id: "traffic" });
  main.append(h("div", { class: "row", style: "margin-bottom:12px" }, windowSel, h("span", { class: "dim" }, "requests/s (blue), denied/s (red), errors/s (yellow)")), content);
  const allow = async (domain: string) => {
    const ok = await confirmModal("Allow this domain?", h("p", {}, "Add ", h("code", {}, domain), " to the policy with default settings (all paths and methods, default rate limit and budget). You can refine it under Configuration."), "Allow");
    if (!ok) return;
    try {
      await api("POST", "/api/config/allow", { domain });
      toast(`${domain} added to the policy`);
    } catch (e: any) {
      toast(`could not allow ${domain}: ${e.message}${e.body?.errors ? " — " + e.body.errors.map(errorText).join("; ") : ""}`);
    }
    load();
  };
  const load = async () => {
    let a: any;
    try {
      a = await api("GET", `/api/analytics?window=${windowSel.value}`);
    } catch {
      return;
    }
    const t = a.totals;
    const stat = (label: string, v: any, id: string) => h("div", { class: "card", id }, h("div", { class: "dim" }, label), h("div", { style: "font-size:22px" }, v));
    content.replaceChildren(
      h(
        "div",
        { class: "grid" },
        stat("requests", t.requests, "t-requests"),
        stat("denied", t.denied, "t-denied"),
        stat("error rate", `${(t.error_rate * 100).toFixed(1)}%`, "t-errors"),
        stat("bytes up / down", `${fmtBytes(t.bytes_up)} / ${fmtBytes(t.bytes_down)}`, "t-bytes"),
        stat("DNS queries (denied)", `${t.dns_queries} (${t.dns_denied})`, "t-dns"),
      ),
      h("div", { class: "card" }, h("h2", {}, "Requests per second"), chart(a.series, a.bucket_seconds, content.clientWidth - 34)),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Blocked"),
        a.blocked?.length
          ? table(
              { id: "blocked" },
              ["domain", "type", "error", "reason", ["count", { class: "num" }], "last", ""],
              a.blocked.map((b: any) =>
                  h(
                    "tr",
                    { "data-domain": b.domain },
                    h("td", {}, b.domain),
                    h("td", {}, b.type),
                    h("td", {}, b.error),
                    h("td", { class: "dim" }, b.reason),
                    h("td", { class: "num" }, b.count),
                    h("td", {}, ago(b.last)),
                    h("td", {}, !b.in_policy && b.domain ? h("button", { "data-action": "allow", onclick: () => allow(b.domain) }, "Allow…") : ""),
                  ),
                ),
            )
          : h("p", { class: "dim" }, "Nothing blocked in this window."),
      ),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Top domains"),
        table(
          { id: "top-domains" },
          ["domain", ...["requests", "denied", "error rate", "up", "down"].map((c): [string, any] => [c, { class: "num" }])],
          (a.top_domains || []).map((d: any) => h("tr", {}, h("td", {}, d.domain), h("td", { class: "num" }, d.requests), h("td", { class: "num" }, d.denied), h("td", { class: "num" }, `${(d.error_rate * 100).toFixed(1)}%`), h("td", { class: "num" }, fmtBytes(d.bytes_up)), h("td", { class: "num" }, fmtBytes(d.bytes_down)))),
        ),
      ),
      h(
        "div",
        { class: "card" },
        h("h2", {}, "Rate limits and egress budgets"),
        table(
          { id: "limits" },
          ["domain", "requests in last minute / limit", ["rate-limited", { class: "num" }], "sent in last hour / budget", ["budget refusals", { class: "num" }]],
          (a.limits || []).map((l: any) =>
              h(
                "tr",
                {},
                h("td", {}, l.domain),
                h("td", {}, h("div", { class: "row" }, l.requests_per_minute ? bar(l.last_minute / l.requests_per_minute) : "", `${l.last_minute} / ${l.requests_per_minute || "∞"}`)),
                h("td", { class: "num" }, l.rate_limited),
                h("td", {}, h("div", { class: "row" }, l.egress_limit ? bar(l.egress_last_hour / l.egress_limit) : "", `${fmtBytes(l.egress_last_hour)} / ${l.egress_limit ? fmtBytes(l.egress_limit) : "∞"}`)),
                h("td", { class: "num" }, l.budget_exceeded),
              ),
            ),
        ),
      ),
    );
  };
  windowSel.addEventListener("change", load);
  load();
  const t = setInterval(load, 3000);
  return () => clearInterval(t);
}

// ---- terminal -----------------------------------------------------------

interface Tab {
  id: number;
  term: Terminal;
  fit: FitAddon;
  ws: WebSocket;
  el: HTMLElement;
  closed: boolean;
}

// Tabs live across page switches so a running shell is not killed by a
// look at the logs.
const tabs: Tab[] = [];
let activeTab = 0;
let nextTab = 1;
const termHost = h("div", { class: "term", id: "term-host" });

function openTab(): Tab {
  const term = new Terminal({ cursorBlink: true, fontFamily: "DejaVu Sans Mono, monospace", fontSize: 14, lineHeight: 1.15, theme: { background: "#000000" } });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const el = h("div", { class: "term-pane" });
  termHost.append(el);
  term.open(el);
  try {
    fit.fit();
  } catch {
    /* not visible yet */
  }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const q = new URLSearchParams({ cols: String(term.cols), rows: String(term.rows), csrf });
  const ws = new WebSocket(`${proto}://${location.host}/api/terminal?${q}`);
  ws.binaryType = "arraybuffer";
  const tab: Tab = { id: nextTab++, term, fit, ws, el, closed: false };
  const enc = new TextEncoder();
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const c = JSON.parse(m.data);
      if (c.type === "exit") term.write(`\r\n\x1b[33m[process exited with status ${c.code}]\x1b[0m\r\n`);
      if (c.type === "error") term.write(`\r\n\x1b[31m[${c.message}]\x1b[0m\r\n`);
    } else term.write(new Uint8Array(m.data));
  };
  ws.onclose = () => {
    tab.closed = true;
    term.write("\r\n\x1b[90m[disconnected]\x1b[0m\r\n");
  };
  term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(enc.encode(d)));
  term.onResize(({ cols, rows }) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: "resize", cols, rows })));
  tabs.push(tab);
  activeTab = tab.id;
  return tab;
}

function terminalPage(main: HTMLElement) {
  const bar = h("div", { class: "term-tabs", id: "term-tabs" });
  main.append(bar, termHost);
  const refit = () => {
    const t = tabs.find((t) => t.id === activeTab);
    if (t) {
      try {
        t.fit.fit();
      } catch {
        /* hidden */
      }
      t.term.focus();
    }
  };
  const paint = () => {
    bar.replaceChildren(
      ...tabs.map((t) =>
        h(
          "button",
          { class: t.id === activeTab ? "active" : "", "data-tab": t.id, onclick: () => ((activeTab = t.id), paint()) },
          `shell ${t.id}${t.closed ? " (ended)" : ""} `,
          h(
            "span",
            {
              title: "close",
              onclick: (ev: Event) => {
                ev.stopPropagation();
                t.ws.close();
                t.term.dispose();
                t.el.remove();
                tabs.splice(tabs.indexOf(t), 1);
                if (activeTab === t.id && tabs.length) activeTab = tabs[tabs.length - 1].id;
                paint();
              },
            },
            "×",
          ),
        ),
      ),
      h("button", { id: "new-tab", onclick: () => (openTab(), paint()) }, "+ New shell"),
    );
    for (const t of tabs) t.el.style.display = t.id === activeTab ? "block" : "none";
    t0 = setTimeout(refit, 0);
  };
  let t0: any;
  if (!tabs.length) openTab();
  paint();
  const onResize = () => refit();
  window.addEventListener("resize", onResize);
  return () => {
    clearTimeout(t0);
    window.removeEventListener("resize", onResize);
    termHost.remove();
  };
}

route();
