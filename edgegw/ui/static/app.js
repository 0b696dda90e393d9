// The admin UI shell: login, navigation (#view in the URL, never the token), and polling
// of the visible view every second.
import { api, ApiError, setToken, token } from "./api.js";
import * as overview from "./overview.js";
import * as routes from "./routes.js";
import * as filters from "./filters.js";
import * as flags from "./flags.js";
import * as backends from "./backends.js";

const VIEWS = { overview, routes, filters, flags, backends };
const POLL_MS = 1000;
const ctx = { config: null, refreshConfig };
let current = null;
let busy = false;
let timer = null;

const $ = (id) => document.getElementById(id);

async function refreshConfig() {
  ctx.config = await api("/admin/config");
}

function showLogin(message) {
  $("login").hidden = false;
  $("nav").hidden = true;
  $("logout").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("login-error").textContent = message || "";
  $("token").focus();
  if (timer) { clearInterval(timer); timer = null; }
}

async function start() {
  $("login").hidden = true;
  $("nav").hidden = false;
  $("logout").hidden = !token();
  for (const view of Object.values(VIEWS)) view.init(ctx);
  show(location.hash.slice(1));
  timer = setInterval(tick, POLL_MS);
}

function show(name) {
  if (!VIEWS[name]) name = "overview";
  current = name;
  for (const [key] of Object.entries(VIEWS)) {
    $(`view-${key}`).hidden = key !== name;
    const link = document.querySelector(`nav a[data-view="${key}"]`);
    if (key === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  tick();
}

async function tick() {
  if (busy || !current || document.hidden) return; // a background tab costs the admin nothing
  busy = true;
  try {
    await VIEWS[current].refresh(ctx);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      setToken("");
      showLogin("The admin refused the token (401): log in again.");
    } else {
      console.warn(err);
    }
  } finally {
    busy = false;
  }
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  setToken($("token").value);
  $("token").value = "";
  try {
    await refreshConfig();
  } catch (err) {
    setToken("");
    const refused = err instanceof ApiError && err.status === 401;
    showLogin(refused ? "Refused: wrong token." : `Cannot reach the admin API: ${err.message}`);
    return;
  }
  await start();
}

async function boot() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => { setToken(""); showLogin(""); });
  window.addEventListener("hashchange", () => { if (ctx.config) show(location.hash.slice(1)); });
  // Without a token the admin answers: it is open, say so loudly.
  try {
    ctx.config = await api("/admin/config", { auth: false });
    $("open-warning").hidden = false;
    await start();
    return;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      showLogin(`Cannot reach the admin API: ${err.message}`);
      return;
    }
  }
  if (token()) {
    try { await refreshConfig(); await start(); return; } catch { setToken(""); }
  }
  showLogin("");
}

boot();
