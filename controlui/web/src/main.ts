// Cagent control-plane UI: a small single-page app over the REST API
// (/api/v1). No framework: each page renders into <main>. The token is kept
// in sessionStorage (this tab only) and sent as a bearer token; the server
// sends a strict Content-Security-Policy, and every value from the API is
// inserted as text, never as HTML.
import { APIError, type Child, ago, confirmModal, fetchJSON, fill, h, table, toast } from "../../../web/shared/ui";
import "@xterm/xterm/css/xterm.css";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";

// ---- API ----------------------------------------------------------------

const TOKEN_KEY = "cagent-cp-token";
let me: { kind: string; tenant_id: string; token_id: string } | null = null;
let tenant = ""; // the tenant pages act on

async function api(method: string, path: string, body?: any): Promise<any> {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") };
  return fetchJSON(method, "/api/v1" + path, body, headers, path === "/whoami" ? undefined : logout);
}

const T = (p: string) => `/tenants/${encodeURIComponent(tenant)}${p}`;

function fail(e: any) {
  toast(e instanceof APIError ? `${e.body?.error || e.status}: ${e.message}` : String(e), true);
}

// shownOnce displays a token that the API returns only once.
function shownOnce(what: string, value: string) {
  const bg = h(
    "div",
    { class: "modal-bg" },
    h(
      "div",
      { class: "modal", role: "dialog" },
      h("h3", {}, what),
      h("p", { class: "dim" }, "Shown once. Copy it now; it cannot be shown again."),
      h("input", { id: "once-value", readonly: true, value, style: "width:100%", onfocus: (e: Event) => (e.target as HTMLInputElement).select() }),
      h("div", { class: "row", style: "justify-content:flex-end;margin-top:14px" }, h("button", { id: "once-close", class: "primary", onclick: () => bg.remove() }, "Done")),
    ),
  );
  document.body.append(bg);
}

function fmtTime(ts: string): string {
  if (!ts) return "";
  const d = new Date(ts);
  return isNaN(d.getTime()) ? ts : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

const listState: Record<string, { q: string; f: string }> = {};

// listCard renders a searchable table: rows are filtered by the search
// box (any cell's text) and by the optional extra filter.
function listCard<T>(opts: {
  id: string;
  title: string;
  rows: T[];
  cols: string[];
  row: (r: T) => Child[];
  text: (r: T) => string;
  extra?: { label: string; options: string[]; match: (r: T, v: string) => boolean };
  actions?: Child;
}): HTMLElement {
  const body = h("tbody");
  // Search and filter survive the periodic refresh of a page.
  const st = (listState[opts.id] ??= { q: "", f: "" });
  const search = h("input", { id: `${opts.id}-search`, placeholder: "search", type: "search", value: st.q }) as HTMLInputElement;
  const sel = opts.extra ? (h("select", { id: `${opts.id}-filter` }, h("option", { value: "" }, `all ${opts.extra.label}`), opts.extra.options.map((o) => h("option", { value: o, selected: o === st.f }, o))) as HTMLSelectElement) : null;
  const count = h("span", { class: "dim" });
  const render = () => {
    st.q = search.value;
    st.f = sel ? sel.value : "";
    const q = search.value.toLowerCase();
    const rows = opts.rows.filter((r) => (!q || opts.text(r).toLowerCase().includes(q)) && (!sel || !sel.value || opts.extra!.match(r, sel.value)));
    fill(body, rows.length ? rows.map((r) => h("tr", {}, opts.row(r).map((c) => h("td", {}, c)))) : h("tr", {}, h("td", { colspan: opts.cols.length, class: "dim" }, "nothing here")));
    fill(count, `${rows.length} of ${opts.rows.length}`);
  };
  search.addEventListener("input", render);
  sel?.addEventListener("change", render);
  render();
  return h(
    "div",
    { class: "card", id: opts.id },
    h("div", { class: "row", style: "justify-content:space-between" }, h("h2", {}, opts.title), h("div", { class: "row filters" }, search, sel, count)),
    opts.actions,
    table({}, opts.cols, body),
  );
}

// ---- shell and routing --------------------------------------------------

type Page = { title: string; render: (main: HTMLElement) => Promise<void>; super?: boolean; admin?: boolean };

const pages: Record<string, Page> = {
  tenants: { title: "Tenants", render: tenantsPage, super: true },
  agents: { title: "Agents", render: agentsPage },
  policies: { title: "Policies", render: policiesPage },
  secrets: { title: "Secrets", render: secretsPage },
  tokens: { title: "Tokens", render: tokensPage, admin: true },
  acls: { title: "IP ACLs", render: aclsPage, admin: true },
  audit: { title: "Audit", render: auditPage, admin: true },
  logs: { title: "Logs", render: logsPage },
  terminal: { title: "Terminal", render: terminalPage },
};

let timer: number | undefined;
// pageCleanup undoes what the current page holds beyond the DOM (the
// terminal's socket); route() runs it before drawing the next page.
let pageCleanup: (() => void) | undefined;

// hashParams are the page's parameters: #/terminal?agent=ID.
function hashParams(): URLSearchParams {
  const i = location.hash.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : location.hash.slice(i + 1));
}

function logout() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  tenant = "";
  route();
}

async function route() {
  if (timer) clearInterval(timer);
  timer = undefined;
  if (pageCleanup) pageCleanup();
  pageCleanup = undefined;
  const app = document.getElementById("app")!;
  if (!me && sessionStorage.getItem(TOKEN_KEY)) {
    try {
      me = await api("GET", "/whoami");
      if (me!.kind === "agent") throw new Error("agent tokens cannot use the UI");
      tenant = me!.tenant_id || sessionStorage.getItem("cagent-cp-tenant") || "";
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      me = null;
    }
  }
  if (!me) return loginPage(app);
  let name = location.hash.replace(/^#\/?/, "").split("?")[0] || (me.kind === "superadmin" && !tenant ? "tenants" : "agents");
  if (!pages[name]) name = "agents";
  const page = pages[name];
  const main = h("main", { id: `page-${name}` });
  const tenantSel = h("select", { id: "tenant-select", title: "tenant" }) as HTMLSelectElement;
  if (me.kind === "superadmin") {
    api("GET", "/tenants")
      .then((l) => {
        fill(tenantSel, h("option", { value: "" }, "(choose a tenant)"), l.items.map((t: any) => h("option", { value: t.id, selected: t.id === tenant }, t.name)));
      })
      .catch(fail);
    tenantSel.addEventListener("change", () => {
      tenant = tenantSel.value;
      sessionStorage.setItem("cagent-cp-tenant", tenant);
      route();
    });
  }
  const visible = Object.entries(pages).filter(([, p]) => (!p.super || me!.kind === "superadmin") && (!p.admin || me!.kind !== "dev"));
  fill(
    app,
    h(
      "header",
      { class: "top" },
      h("span", { class: "brand" }, "cagent control plane"),
      h("nav", {}, visible.map(([k, p]) => h("a", { href: `#/${k}`, id: `nav-${k}`, class: k === name ? "active" : "" }, p.title))),
      h("span", { class: "spacer" }),
      me.kind === "superadmin" ? tenantSel : null,
      h("span", { class: "dim", id: "whoami" }, `${me.kind}${me.tenant_id ? " · " + me.tenant_id.slice(0, 8) : ""}`),
      h("button", { id: "logout", onclick: logout }, "Log out"),
    ),
    main,
  );
  if (!page.super && !tenant) {
    fill(main, h("div", { class: "card" }, "Choose a tenant first (top right), or create one on the Tenants page."));
    return;
  }
  try {
    await page.render(main);
  } catch (e) {
    fail(e);
  }
}

function loginPage(app: HTMLElement) {
  const input = h("input", { id: "token", type: "password", placeholder: "cagent_…", autocomplete: "off" }) as HTMLInputElement;
  const err = h("div", { class: "errors", id: "login-error" });
  const submit = async (e: Event) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    me = null;
    await route();
    // route() drew a fresh login form: put the message in it.
    const cur = document.getElementById("login-error");
    if (!me && cur) fill(cur, "That token was not accepted (missing, wrong, disabled, expired, or an agent token).");
  };
  fill(
    app,
    h(
      "form",
      { class: "card login", onsubmit: submit },
      h("h2", {}, "cagent control plane"),
      h("p", { class: "dim" }, "Log in with a superadmin, admin or dev token."),
      input,
      err,
      h("button", { id: "login", class: "primary", type: "submit" }, "Log in"),
    ),
  );
  input.focus();
}

window.addEventListener("hashchange", route);

// ---- pages --------------------------------------------------------------

async function tenantsPage(main: HTMLElement) {
  const l = await api("GET", "/tenants");
  const name = h("input", { id: "tenant-name", placeholder: "name (a-z 0-9 . _ -)" }) as HTMLInputElement;
  const create = async () => {
    try {
      const t = await api("POST", "/tenants", { name: name.value.trim() });
      tenant = t.id;
      sessionStorage.setItem("cagent-cp-tenant", tenant);
      toast(`tenant ${t.name} created`);
      route();
    } catch (e) {
      fail(e);
    }
  };
  fill(
    main,
    listCard({
      id: "tenants",
      title: "Tenants",
      rows: l.items,
      cols: ["name", "id", "created", ""],
      text: (t: any) => `${t.name} ${t.id}`,
      row: (t: any) => [
        h("a", { href: "#/agents", onclick: () => { tenant = t.id; sessionStorage.setItem("cagent-cp-tenant", tenant); } }, t.name),
        h("code", {}, t.id),
        fmtTime(t.created_at),
        h("button", { class: "danger", onclick: async () => {
          if (!(await confirmModal("Delete tenant", `Delete ${t.name}? Its tokens and agents are disabled.`, "Delete"))) return;
          await api("DELETE", `/tenants/${t.id}`).catch(fail);
          route();
        } }, "Delete"),
      ],
      actions: h("div", { class: "row", style: "margin-bottom:10px" }, name, h("button", { id: "tenant-create", class: "primary", onclick: create }, "Create tenant")),
    }),
  );
}

function metricsOf(a: any): Record<string, any> {
  return a.metrics && typeof a.metrics === "object" ? a.metrics : {};
}

async function agentsPage(main: HTMLElement) {
  const listEl = h("div");
  const cmdEl = h("div", { id: "commands" });
  let shown: any = null; // the agent whose commands are shown
  fill(main, listEl, cmdEl);
  const render = async () => {
    const l = await api("GET", T("/agents"));
    const canAdmin = me!.kind !== "dev";
    const name = h("input", { id: "agent-name", placeholder: "agent name" }) as HTMLInputElement;
    const create = async () => {
      try {
        const a = await api("POST", T("/agents"), { name: name.value.trim() });
        shownOnce(`Agent token for ${a.name}`, a.token.token);
        render();
      } catch (e) {
        fail(e);
      }
    };
    const cmd = async (a: any, command: string) => {
      const body: any = { command };
      if (command === "wipe") {
        const ws = h("input", { type: "checkbox", id: "wipe-ws" }) as HTMLInputElement;
        if (!(await confirmModal(`Wipe ${a.name}`, h("label", { class: "row" }, ws, "also delete everything in the workspace"), "Wipe"))) return;
        body.wipe_workspace = ws.checked;
      }
      try {
        await api("POST", T(`/agents/${a.id}/commands`), body);
        toast(`${command} sent to ${a.name}`);
        setTimeout(render, 800);
      } catch (e) {
        fail(e);
      }
    };
    if (shown) showCommands(shown).catch(() => {});
    fill(
      listEl,
      listCard({
        id: "agents",
        title: "Agents",
        rows: l.items,
        cols: ["name", "status", "last heartbeat", "metrics", "commands"],
        text: (a: any) => `${a.name} ${a.id} ${a.status || ""}`,
        extra: { label: "states", options: ["online", "offline"], match: (a: any, v) => (v === "online") === !!a.online },
        row: (a: any) => {
          const m = metricsOf(a);
          return [
            h("div", {}, h("b", {}, a.name), h("div", { class: "dim" }, h("code", {}, a.id))),
            h("span", { class: "row" }, h("span", { class: "badge " + (a.online ? "ok" : "stopped"), "data-agent-online": a.name }, a.online ? "online" : "offline"), a.status ? h("span", { class: "badge " + a.status }, a.status) : null),
            ago(a.last_heartbeat),
            h("span", { class: "dim" }, Object.entries(m).filter(([k]) => k !== "last_error").map(([k, v]) => `${k}=${v}`).join("  "), m.last_error ? h("div", { class: "errors" }, m.last_error) : null),
            canAdmin
              ? h("span", { class: "row" }, h("button", { "data-terminal": a.name, onclick: () => (location.hash = `#/terminal?agent=${encodeURIComponent(a.id)}`) }, "terminal"), ["start", "stop", "restart", "wipe"].map((c) => h("button", { "data-cmd": `${a.name}:${c}`, class: c === "wipe" ? "danger" : "", onclick: () => cmd(a, c) }, c)),
                  h("button", { "data-history": a.name, onclick: () => showCommands(a) }, "history"),
                  h("button", { class: "danger", onclick: async () => {
                    if (!(await confirmModal("Delete agent", `Delete ${a.name} with its token, policies and commands?`, "Delete"))) return;
                    await api("DELETE", T(`/agents/${a.id}`)).catch(fail);
                    render();
                  } }, "delete"))
              : h("span", { class: "row" }, h("button", { "data-terminal": a.name, onclick: () => (location.hash = `#/terminal?agent=${encodeURIComponent(a.id)}`) }, "terminal"),
                  h("button", { "data-history": a.name, onclick: () => showCommands(a) }, "history")),
          ];
        },
        actions: canAdmin ? h("div", { class: "row", style: "margin-bottom:10px" }, name, h("button", { id: "agent-create", class: "primary", onclick: create }, "Register agent")) : null,
      }),
    );
  };
  const showCommands = async (a: any) => {
    shown = a;
    const l = await api("GET", T(`/agents/${a.id}/commands`));
    fill(cmdEl, listCard({
      id: "command-list", title: `Commands of ${a.name}`, rows: l.items, cols: ["when", "command", "status", "result"],
      text: (c: any) => `${c.command} ${c.status} ${c.result || ""}`,
      extra: { label: "statuses", options: ["pending", "delivered", "succeeded", "failed"], match: (c: any, v) => c.status === v },
      row: (c: any) => [fmtTime(c.created_at), c.command + (c.wipe_workspace ? " (workspace)" : ""), h("span", { class: "badge " + c.status }, c.status), c.result || ""],
    }));
  };
  await render();
  timer = window.setInterval(() => {
    if (!document.querySelector(".modal-bg")) render().catch(() => {});
  }, 5000);
}

async function policiesPage(main: HTMLElement) {
  const [l, agents] = await Promise.all([api("GET", T("/policies")), api("GET", T("/agents"))]);
  const agentName: Record<string, string> = {};
  for (const a of agents.items) agentName[a.id] = a.name;
  const canAdmin = me!.kind !== "dev";
  const domain = h("input", { id: "policy-domain", placeholder: "domain, e.g. api.openai.com or *.github.com" }) as HTMLInputElement;
  const scope = h("select", { id: "policy-scope" }, h("option", { value: "" }, "tenant-wide"), agents.items.map((a: any) => h("option", { value: a.id }, `agent ${a.name}`))) as HTMLSelectElement;
  const advanced = h("textarea", { id: "policy-entry", rows: 5, style: "width:100%", placeholder: '{"allowed_paths": ["/v1/*"], "rate_limit": {"requests_per_minute": 60}, "credential": {"header": "Authorization", "format": "Bearer {value}", "secret": "openai"}}' }) as HTMLTextAreaElement;
  const errs = h("div", { class: "errors", id: "policy-errors" });
  let editing: any = null; // the policy being edited, or null for a new one
  const save = h("button", { id: "policy-create", class: "primary" }, "Add policy") as HTMLButtonElement;
  const create = async () => {
    let entry: any = {};
    try {
      entry = advanced.value.trim() ? JSON.parse(advanced.value) : {};
    } catch (e) {
      fill(errs, "entry: not valid JSON");
      return;
    }
    entry.domain = domain.value.trim();
    try {
      if (editing) await api("PUT", T(`/policies/${editing.id}`), { entry, enabled: editing.enabled });
      else await api("POST", T("/policies"), { agent_id: scope.value, entry });
      toast("policy saved; connected data planes apply it within a second");
      route();
    } catch (e: any) {
      fill(errs, e.message);
    }
  };
  save.addEventListener("click", create);
  const edit = (p: any) => {
    editing = p;
    domain.value = p.domain;
    scope.value = p.agent_id || "";
    scope.disabled = true; // an entry cannot move to another scope
    const rest = Object.fromEntries(Object.entries(p.entry).filter(([k]) => k !== "domain"));
    advanced.value = Object.keys(rest).length ? JSON.stringify(rest, null, 2) : "";
    fill(save, `Save ${p.domain}`);
    fill(errs);
    domain.focus();
  };
  const toggle = async (p: any) => {
    await api("PUT", T(`/policies/${p.id}`), { entry: p.entry, enabled: !p.enabled }).catch(fail);
    route();
  };
  fill(
    main,
    canAdmin
      ? h("div", { class: "card" }, h("h2", {}, "Add a domain policy"), h("div", { class: "row" }, domain, scope), h("p", { class: "dim" }, "Other fields of the domains[] entry, as JSON (optional):"), advanced, errs,
          save)
      : null,
    listCard({
      id: "policies",
      title: "Domain policies",
      rows: l.items,
      cols: ["domain", "scope", "entry", "enabled", ""],
      text: (p: any) => `${p.domain} ${JSON.stringify(p.entry)} ${agentName[p.agent_id] || ""}`,
      extra: { label: "scopes", options: ["tenant-wide", "per agent"], match: (p: any, v) => (v === "tenant-wide") === !p.agent_id },
      row: (p: any) => [
        h("b", {}, p.domain),
        p.agent_id ? `agent ${agentName[p.agent_id] || p.agent_id}` : "tenant-wide",
        h("code", { class: "dim" }, JSON.stringify(Object.fromEntries(Object.entries(p.entry).filter(([k]) => k !== "domain")))),
        h("span", { class: "badge " + (p.enabled ? "ok" : "stopped") }, p.enabled ? "enabled" : "disabled"),
        canAdmin ? h("span", { class: "row" }, h("button", { "data-edit": p.domain, onclick: () => edit(p) }, "edit"), h("button", { onclick: () => toggle(p) }, p.enabled ? "disable" : "enable"),
          h("button", { class: "danger", onclick: async () => {
            if (!(await confirmModal("Delete policy", `Delete the policy for ${p.domain}?`, "Delete"))) return;
            await api("DELETE", T(`/policies/${p.id}`)).catch(fail);
            route();
          } }, "delete")) : "",
      ],
    }),
  );
}

async function secretsPage(main: HTMLElement) {
  const l = await api("GET", T("/secrets"));
  const canAdmin = me!.kind !== "dev";
  const name = h("input", { id: "secret-name", placeholder: "name" }) as HTMLInputElement;
  const value = h("input", { id: "secret-value", type: "password", placeholder: "value (write-only)", autocomplete: "off" }) as HTMLInputElement;
  const set = async () => {
    try {
      await api("PUT", T(`/secrets/${encodeURIComponent(name.value.trim())}`), { value: value.value });
      value.value = "";
      toast("secret saved");
      route();
    } catch (e) {
      fail(e);
    }
  };
  fill(
    main,
    canAdmin ? h("div", { class: "card" }, h("h2", {}, "Set a secret"), h("p", { class: "dim" }, "Values are encrypted at rest and never shown again; only data planes whose policy references the secret receive it."), h("div", { class: "row" }, name, value, h("button", { id: "secret-set", class: "primary", onclick: set }, "Save"))) : null,
    listCard({
      id: "secrets",
      title: "Secrets",
      rows: l.items,
      cols: ["name", "version", "updated", ""],
      text: (s: any) => s.name,
      row: (s: any) => [
        h("b", {}, s.name),
        String(s.version),
        fmtTime(s.updated_at),
        canAdmin ? h("span", { class: "row" }, h("button", { onclick: () => { name.value = s.name; value.focus(); } }, "rotate"),
          h("button", { class: "danger", onclick: async () => {
            if (!(await confirmModal("Delete secret", `Delete ${s.name}? Credentials using it fail closed.`, "Delete"))) return;
            await api("DELETE", T(`/secrets/${encodeURIComponent(s.name)}`)).catch(fail);
            route();
          } }, "delete")) : "",
      ],
    }),
  );
}

async function tokensPage(main: HTMLElement) {
  const [l, agents] = await Promise.all([api("GET", T("/tokens")), api("GET", T("/agents"))]);
  const agentName: Record<string, string> = {};
  for (const a of agents.items) agentName[a.id] = a.name;
  const kind = h("select", { id: "token-kind" }, ["admin", "dev", "agent"].map((k) => h("option", { value: k }, k))) as HTMLSelectElement;
  const name = h("input", { id: "token-name", placeholder: "name" }) as HTMLInputElement;
  const agent = h("select", { id: "token-agent" }, h("option", { value: "" }, "(agent tokens: which agent)"), agents.items.map((a: any) => h("option", { value: a.id }, a.name))) as HTMLSelectElement;
  const expires = h("input", { id: "token-expires", type: "number", min: "0", placeholder: "expires in days (empty: never)" }) as HTMLInputElement;
  const create = async () => {
    const body: any = { kind: kind.value, name: name.value.trim() };
    if (kind.value === "agent") body.agent_id = agent.value;
    if (expires.value) body.expires_at = new Date(Date.now() + Number(expires.value) * 86400e3).toISOString();
    try {
      const t = await api("POST", T("/tokens"), body);
      shownOnce(`${t.kind} token ${t.name}`, t.token);
      const tbl = await api("GET", T("/tokens"));
      l.items = tbl.items;
      route();
    } catch (e) {
      fail(e);
    }
  };
  fill(
    main,
    h("div", { class: "card" }, h("h2", {}, "Create a token"), h("div", { class: "row" }, kind, name, agent, expires, h("button", { id: "token-create", class: "primary", onclick: create }, "Create"))),
    listCard({
      id: "tokens",
      title: "Tokens",
      rows: l.items,
      cols: ["name", "kind", "agent", "expires", "state", ""],
      text: (t: any) => `${t.name} ${t.kind} ${t.id} ${agentName[t.agent_id] || ""}`,
      extra: { label: "kinds", options: ["admin", "dev", "agent"], match: (t: any, v) => t.kind === v },
      row: (t: any) => [
        h("div", {}, h("b", {}, t.name), h("div", { class: "dim" }, h("code", {}, t.id))),
        t.kind,
        t.agent_id ? agentName[t.agent_id] || t.agent_id : "",
        t.expires_at ? fmtTime(t.expires_at) : "never",
        h("span", { class: "badge " + (t.disabled ? "stopped" : "ok") }, t.disabled ? "disabled" : "active"),
        h("span", { class: "row" },
          h("button", { onclick: async () => { await api("PATCH", T(`/tokens/${t.id}`), { disabled: !t.disabled }).catch(fail); route(); } }, t.disabled ? "enable" : "disable"),
          h("button", { class: "danger", onclick: async () => {
            if (!(await confirmModal("Revoke token", `Revoke ${t.name}? This cannot be undone.`, "Revoke"))) return;
            await api("DELETE", T(`/tokens/${t.id}`)).catch(fail);
            route();
          } }, "revoke")),
      ],
    }),
  );
}

async function aclsPage(main: HTMLElement) {
  const l = await api("GET", T("/ip-acls"));
  const cidr = h("input", { id: "acl-cidr", placeholder: "203.0.113.0/24" }) as HTMLInputElement;
  const desc = h("input", { id: "acl-desc", placeholder: "description" }) as HTMLInputElement;
  const add = async () => {
    try {
      await api("POST", T("/ip-acls"), { cidr: cidr.value.trim(), description: desc.value });
      route();
    } catch (e) {
      fail(e);
    }
  };
  fill(
    main,
    h("div", { class: "card" }, h("h2", {}, "Allow admin and dev tokens from"), h("p", { class: "dim" }, "With at least one entry, this tenant's admin and dev tokens work only from these addresses (agents are not restricted). Do not lock yourself out."),
      h("div", { class: "row" }, cidr, desc, h("button", { id: "acl-add", class: "primary", onclick: add }, "Add"))),
    listCard({
      id: "acls",
      title: "IP ACL",
      rows: l.items,
      cols: ["cidr", "description", "created", ""],
      text: (a: any) => `${a.cidr} ${a.description || ""}`,
      row: (a: any) => [h("code", {}, a.cidr), a.description || "", fmtTime(a.created_at),
        h("button", { class: "danger", onclick: async () => { await api("DELETE", T(`/ip-acls/${a.id}`)).catch(fail); route(); } }, "delete")],
    }),
  );
}

async function auditPage(main: HTMLElement) {
  const action = h("input", { id: "audit-action", placeholder: "action, e.g. policy.create" }) as HTMLInputElement;
  const objType = h("select", { id: "audit-object" }, h("option", { value: "" }, "all objects"), ["tenant", "token", "agent", "policy", "secret", "ip_acl", "command"].map((o) => h("option", { value: o }, o))) as HTMLSelectElement;
  const since = h("input", { id: "audit-since", type: "datetime-local" }) as HTMLInputElement;
  const out = h("div");
  const load = async () => {
    const q = new URLSearchParams({ limit: "500" });
    if (action.value) q.set("action", action.value.trim());
    if (objType.value) q.set("object_type", objType.value);
    if (since.value) q.set("since", new Date(since.value).toISOString());
    try {
      const l = await api("GET", T(`/audit?${q}`));
      fill(out, listCard({
        id: "audit", title: "Audit trail", rows: l.items, cols: ["time", "actor", "action", "object", "from", "detail"],
        text: (e: any) => `${e.action} ${e.object_type} ${e.object_id} ${e.actor_kind} ${e.actor_token_id} ${e.remote_addr} ${JSON.stringify(e.detail || {})}`,
        extra: { label: "actors", options: ["superadmin", "admin", "agent", "system"], match: (e: any, v) => e.actor_kind === v },
        row: (e: any) => [fmtTime(e.ts), `${e.actor_kind} ${(e.actor_token_id || "").slice(0, 8)}`, h("b", {}, e.action), `${e.object_type} ${(e.object_id || "").slice(0, 12)}`, e.remote_addr, h("code", { class: "dim" }, e.detail ? JSON.stringify(e.detail) : "")],
      }));
    } catch (e) {
      fail(e);
    }
  };
  fill(main, h("div", { class: "card row filters" }, action, objType, since, h("button", { id: "audit-load", class: "primary", onclick: load }, "Query")), out);
  await load();
}

// Logs: the agents' shipped audit events, with the same analytics as the
// local UI's traffic page (decisions, top domains, error rate, a timeline).
async function logsPage(main: HTMLElement) {
  const agents = await api("GET", T("/agents"));
  const agentName: Record<string, string> = {};
  for (const a of agents.items) agentName[a.id] = a.name;
  const agent = h("select", { id: "logs-agent" }, h("option", { value: "" }, "all agents"), agents.items.map((a: any) => h("option", { value: a.id }, a.name))) as HTMLSelectElement;
  const type = h("select", { id: "logs-type" }, h("option", { value: "" }, "all types"), ["http", "connect", "dns", "sandbox", "command", "admin"].map((t) => h("option", { value: t }, t))) as HTMLSelectElement;
  const decision = h("select", { id: "logs-decision" }, h("option", { value: "" }, "all decisions"), ["allow", "deny", "report"].map((t) => h("option", { value: t }, t))) as HTMLSelectElement;
  const q = h("input", { id: "logs-q", type: "search", placeholder: "text (host, path, reason…)" }) as HTMLInputElement;
  const since = h("input", { id: "logs-since", type: "datetime-local" }) as HTMLInputElement;
  const stats = h("div", { class: "grid", id: "logs-stats" });
  const tbl = h("tbody");
  const load = async () => {
    const p = new URLSearchParams({ limit: "1000" });
    if (agent.value) p.set("agent_id", agent.value);
    if (type.value) p.set("type", type.value);
    if (q.value) p.set("q", q.value.trim());
    if (since.value) p.set("since", new Date(since.value).toISOString());
    let items: any[] = [];
    try {
      items = (await api("GET", T(`/logs?${p}`))).items;
    } catch (e) {
      fail(e);
      return;
    }
    if (decision.value) items = items.filter((e) => e.data?.decision === decision.value);
    analytics(stats, items);
    fill(tbl, items.length ? items.slice(0, 500).map((e) => {
      const d = e.data || {};
      const what = d.type === "dns" ? `${d.qname || ""} ${d.qtype || ""} ${d.rcode || ""}` : d.type === "http" || d.type === "connect" ? `${d.method || ""} ${d.host || ""}${d.port && d.port !== 80 && d.port !== 443 ? ":" + d.port : ""}${d.path || ""} ${d.status || ""}` : `${d.action || ""}`;
      return h("tr", { class: "log-row" }, h("td", {}, fmtTime(e.ts)), h("td", {}, agentName[e.agent_id] || e.agent_id.slice(0, 8)), h("td", {}, d.type || e.type),
        h("td", {}, d.decision ? h("span", { class: "badge " + d.decision }, d.decision) : ""), h("td", {}, what), h("td", { class: "dim" }, d.reason || d.error || ""));
    }) : h("tr", {}, h("td", { colspan: 6, class: "dim" }, "no events")));
  };
  for (const el of [agent, type, decision]) el.addEventListener("change", load);
  q.addEventListener("keydown", (e) => { if ((e as KeyboardEvent).key === "Enter") load(); });
  fill(
    main,
    h("div", { class: "card row filters" }, agent, type, decision, q, since, h("button", { id: "logs-load", class: "primary", onclick: load }, "Query")),
    stats,
    h("div", { class: "card logs" }, h("div", { class: "logs-wrap" }, table({}, ["time", "agent", "type", "decision", "what", "reason"], tbl))),
  );
  await load();
  timer = window.setInterval(() => { if (!document.querySelector(".modal-bg")) load(); }, 5000);
}

function analytics(el: HTMLElement, items: any[]) {
  const req = items.filter((e) => e.data?.type === "http" || e.data?.type === "connect");
  const deny = req.filter((e) => e.data.decision === "deny").length;
  const errors = req.filter((e) => (e.data.status || 0) >= 500).length;
  const byHost: Record<string, { n: number; deny: number }> = {};
  for (const e of [...req, ...items.filter((e) => e.data?.type === "dns")]) {
    const host = e.data.host || (e.data.qname || "").replace(/\.$/, "");
    if (!host) continue;
    byHost[host] ??= { n: 0, deny: 0 };
    byHost[host].n++;
    if (e.data.decision === "deny") byHost[host].deny++;
  }
  const top = Object.entries(byHost).sort((a, b) => b[1].n - a[1].n).slice(0, 8);
  const max = top.length ? top[0][1].n : 1;
  // Requests per minute over the window shown.
  const perMin: Record<string, number> = {};
  for (const e of req) {
    const m = (e.ts || "").slice(0, 16);
    perMin[m] = (perMin[m] || 0) + 1;
  }
  const mins = Object.keys(perMin).sort().slice(-30);
  const peak = Math.max(1, ...mins.map((m) => perMin[m]));
  fill(
    el,
    h("div", { class: "card" }, h("h2", {}, "Requests"), h("dl", { class: "kv" },
      h("dt", {}, "events"), h("dd", { id: "stat-events" }, String(items.length)),
      h("dt", {}, "requests"), h("dd", { id: "stat-requests" }, String(req.length)),
      h("dt", {}, "denied"), h("dd", { id: "stat-denied" }, `${deny} (${req.length ? Math.round((100 * deny) / req.length) : 0}%)`),
      h("dt", {}, "upstream errors"), h("dd", {}, `${errors} (${req.length ? Math.round((100 * errors) / req.length) : 0}%)`))),
    h("div", { class: "card" }, h("h2", {}, "Top domains"), h("table", { id: "top-domains" }, top.map(([host, v]) => h("tr", {}, h("td", {}, host), h("td", { class: "num" }, String(v.n)),
      h("td", {}, h("div", { class: "bar" }, h("div", { class: v.deny > v.n / 2 ? "hot" : "", style: `width:${Math.round((100 * v.n) / max)}%` }))))))),
    h("div", { class: "card" }, h("h2", {}, "Requests per minute"), h("div", { class: "row", style: "align-items:flex-end;height:120px;gap:2px" },
      mins.map((m) => h("div", { title: `${m}: ${perMin[m]}`, style: `width:8px;background:var(--accent);height:${Math.max(2, Math.round((110 * perMin[m]) / peak))}px` })))),
  );
}

// ---- terminal -----------------------------------------------------------

// terminalPage opens a shell in an agent's sandbox. The control plane
// relays it over the agent's own connection; the WebSocket is
// authenticated by a single-use ticket (browsers cannot send the bearer
// token on a WebSocket). Protocol: binary messages are pty bytes both
// ways; text messages are JSON (resize up; exit or error down).
async function terminalPage(main: HTMLElement) {
  const agents = (await api("GET", T("/agents"))).items as any[];
  const want = hashParams().get("agent") || "";
  const sel = h("select", { id: "term-agent" }, agents.map((a) => h("option", { value: a.id, selected: a.id === want }, `${a.name}${a.online ? "" : " (offline)"}`))) as HTMLSelectElement;
  const status = h("span", { class: "dim", id: "term-status" });
  const host = h("div", { class: "term", id: "term-host" });
  let ws: WebSocket | null = null;
  let term: Terminal | null = null;
  let fit: FitAddon | null = null;
  const close = () => {
    ws?.close();
    ws = null;
    term?.dispose();
    term = null;
    fit = null;
    host.replaceChildren();
  };
  const refit = () => {
    try {
      fit?.fit();
    } catch {
      /* not visible */
    }
  };
  const open = async () => {
    close();
    const agent = sel.value;
    if (!agent) return;
    const hash = `#/terminal?agent=${encodeURIComponent(agent)}`;
    if (location.hash !== hash) {
      // route() draws this page again for that agent and opens it.
      location.hash = hash;
      return;
    }
    term = new Terminal({ cursorBlink: true, fontFamily: "DejaVu Sans Mono, monospace", fontSize: 14, lineHeight: 1.15, theme: { background: "#000000" } });
    fit = new FitAddon();
    term.loadAddon(fit);
    const pane = h("div", { class: "term-pane" });
    host.append(pane);
    term.open(pane);
    refit();
    const t = term;
    let tk: any;
    try {
      // Errors (agent offline, not connected to this replica, no rights)
      // come back here as JSON: a failed WebSocket handshake tells the
      // page nothing.
      tk = await api("POST", T(`/agents/${encodeURIComponent(agent)}/terminal/ticket`));
    } catch (e) {
      const msg = e instanceof APIError ? `${e.body?.error || e.status}: ${e.message}` : String(e);
      t.write(`\x1b[31m[${msg}]\x1b[0m\r\n`);
      fill(status, "not connected");
      return;
    }
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const q = new URLSearchParams({ ticket: tk.ticket, cols: String(t.cols), rows: String(t.rows) });
    const sock = new WebSocket(`${proto}://${location.host}${tk.path}?${q}`);
    sock.binaryType = "arraybuffer";
    ws = sock;
    const enc = new TextEncoder();
    sock.onopen = () => {
      fill(status, "connected");
      t.focus();
    };
    sock.onmessage = (m) => {
      if (typeof m.data === "string") {
        const c = JSON.parse(m.data);
        if (c.type === "exit") t.write(`\r\n\x1b[33m[process exited with status ${c.code}]\x1b[0m\r\n`);
        if (c.type === "error") t.write(`\r\n\x1b[31m[${c.error}: ${c.message}]\x1b[0m\r\n`);
      } else t.write(new Uint8Array(m.data));
    };
    sock.onclose = () => {
      if (ws === sock) fill(status, "disconnected");
      t.write("\r\n\x1b[90m[disconnected]\x1b[0m\r\n");
    };
    t.onData((d) => sock.readyState === WebSocket.OPEN && sock.send(enc.encode(d)));
    t.onResize(({ cols, rows }) => sock.readyState === WebSocket.OPEN && sock.send(JSON.stringify({ type: "resize", cols, rows })));
  };
  fill(
    main,
    h(
      "div",
      { class: "card" },
      h("div", { class: "row", style: "margin-bottom:8px" }, h("h2", {}, "Terminal"), sel, h("button", { id: "term-open", class: "primary", onclick: open }, "Open shell"), h("button", { id: "term-close", onclick: () => (close(), fill(status, "closed")) }, "Close"), status),
      h("p", { class: "dim" }, "A shell in the agent's sandbox, relayed over the agent's connection to this control plane. Opening and closing it is recorded in the audit trail; what you type is not."),
      host,
    ),
  );
  window.addEventListener("resize", refit);
  pageCleanup = () => {
    window.removeEventListener("resize", refit);
    close();
  };
  if (want && agents.some((a) => a.id === want)) open();
}

route();
