// Helpers shared by the admin UI (adminui/web) and the control-plane UI
// (controlui/web): DOM building, JSON fetch with API errors, toasts, the
// confirm dialog, tables and times. Each UI imports this file by relative
// path and keeps only its own pages. Nothing here imports an npm package:
// this directory has no node_modules of its own.
import "./style.css";

export type Attrs = Record<string, any>;
export type Child = Node | string | number | null | undefined | false | Child[];

// h builds an element. Values are set as properties or attributes and
// children as text nodes, never parsed as HTML.
export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") (el as HTMLInputElement).value = v;
    else if (k === "checked") (el as HTMLInputElement).checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el: HTMLElement, children: Child[]) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// fill replaces el's children, skipping empty values (DOM replaceChildren
// would print "undefined").
export function fill(el: HTMLElement, ...children: Child[]) {
  el.replaceChildren();
  append(el, children);
}

// A column heading: its text, or its text and the <th>'s attributes.
export type Col = string | [string, Attrs];

// table builds <table attrs> with a heading row of cols; body is a <tbody>
// the caller keeps (to refill it) or the rows to put in a new one.
export function table(attrs: Attrs, cols: Col[], body: HTMLElement | Child[]): HTMLElement {
  const head = h("thead", {}, h("tr", {}, cols.map((c) => (typeof c === "string" ? h("th", {}, c) : h("th", c[1], c[0])))));
  const tbody = body instanceof HTMLElement && body.tagName === "TBODY" ? body : h("tbody", {}, body);
  return h("table", attrs, head, tbody);
}

// ---- API ----------------------------------------------------------------

export class APIError extends Error {
  constructor(
    public status: number,
    public body: any,
  ) {
    super(body?.message || `HTTP ${status}`);
  }
}

// fetchJSON sends body (if any) as JSON and returns the decoded answer
// (null when empty). A non-2xx answer throws APIError; a 401 first calls
// unauthorized, if given.
export async function fetchJSON(method: string, url: string, body: any, headers: Record<string, string> = {}, unauthorized?: () => void): Promise<any> {
  const hs: Record<string, string> = { ...headers };
  if (body !== undefined) hs["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method,
    headers: hs,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data: any = null;
  try {
    data = await res.json();
  } catch {
    /* empty body */
  }
  if (res.status === 401 && unauthorized) {
    unauthorized();
    throw new APIError(401, data);
  }
  if (!res.ok) throw new APIError(res.status, data);
  return data;
}

// ---- feedback -----------------------------------------------------------

export function toast(msg: string, bad = false, ms = 4000) {
  const t = h("div", { class: "toast" + (bad ? " bad" : ""), role: "status" }, msg);
  document.body.append(t);
  setTimeout(() => t.remove(), ms);
}

export function confirmModal(title: string, body: Child, okLabel = "Confirm"): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (v: boolean) => {
      bg.remove();
      resolve(v);
    };
    const bg = h(
      "div",
      { class: "modal-bg" },
      h(
        "div",
        { class: "modal", role: "dialog" },
        h("h3", {}, title),
        h("div", {}, body),
        h(
          "div",
          { class: "row", style: "justify-content:flex-end;margin-top:14px" },
          h("button", { id: "modal-cancel", onclick: () => done(false) }, "Cancel"),
          h("button", { id: "modal-ok", class: "primary", onclick: () => done(true) }, okLabel),
        ),
      ),
    );
    document.body.append(bg);
  });
}

// ---- times --------------------------------------------------------------

export function ago(ts: string): string {
  if (!ts) return "never";
  const s = Math.max(0, (Date.now() - new Date(ts).getTime()) / 1000);
  if (s < 90) return `${Math.round(s)}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}
