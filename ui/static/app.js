// The console: the metadata follows the watch stream (no polling per row);
// the controllers' own state (quorum, broker sessions, the balancing plan)
// is asked for once every two seconds, for the whole cluster at once.
import { ApiError, call, hasToken, services, setToken, watch } from "./api.js";
import { ClusterState, moving, offline, underReplicated } from "./state.js";

const state = new ClusterState();
const page = {
  quorum: null, // DescribeQuorumResponse
  sessions: new Map(), // broker id -> BrokerSession
  sessionsNote: "",
  balance: null, // BalanceStatus
  leaderChanges: [], // {at, leader, term}
  lastLeader: null,
  connected: false,
  search: "",
};
const $ = (id) => document.getElementById(id);
const pollInterval = 2000;

// --- DOM helpers -----------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// setRows brings a table body to rows, each {key, cells, class}: a row
// whose content did not change keeps its element, in place, so that
// focus, a click in progress and a selection survive updates; only the
// rows that changed are replaced. A placeholder row keeps an empty table
// from collapsing.
function setRows(tbody, rows, empty, columns) {
  const want = rows.map((r) => {
    const tr = el("tr", { class: r.class, "data-key": r.key },
      r.cells.map((c, i) => (i === 0 && r.header ? el("th", { scope: "row" }, c) : el("td", {}, c))));
    return tr;
  });
  if (want.length === 0) want.push(el("tr", { "data-key": "" }, el("td", { colspan: columns, class: "note" }, empty)));
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  want.forEach((tr, i) => {
    const old = existing.get(tr.dataset.key);
    const node = old && old.outerHTML === tr.outerHTML ? old : tr;
    if (old && node !== old) old.replaceWith(node);
    const at = tbody.children[i];
    if (at !== node) tbody.insertBefore(node, at || null);
  });
  while (tbody.children.length > want.length) tbody.lastElementChild.remove();
}

const list = (xs) => (xs.length ? xs.join(", ") : "—");
const age = (ms) => (ms < 1000 ? `${ms} ms ago` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s ago` : `${Math.round(ms / 60000)} min ago`);

function notice(text, ok = false) {
  const n = $("notice");
  n.textContent = text;
  n.className = ok ? "notice ok" : "notice";
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.hidden = true; }, ok ? 5000 : 12000);
}

// refused shows why the controller refused a call; a missing token opens
// the token dialog.
function refused(what, err) {
  const message = err instanceof ApiError ? `${what} refused (${err.code}): ${err.message}` : `${what} failed: ${err}`;
  notice(message);
  if (err instanceof ApiError && err.code === "unauthenticated") askToken();
}

// --- rendering ----------------------------------------------------------------

// render draws at most every renderGap: a busy cluster's changes are
// drawn together, not one full pass each.
const renderGap = 150;
let scheduled = false;
let lastRender = 0;
function render() {
  if (scheduled) return;
  scheduled = true;
  setTimeout(() => requestAnimationFrame(() => {
    scheduled = false;
    lastRender = performance.now();
    renderHeader();
    renderView();
  }), Math.max(0, renderGap - (performance.now() - lastRender)));
}

function renderHeader() {
  const q = page.quorum;
  $("version").textContent = state.version ? String(state.version) : "—";
  $("cluster-id").textContent = q?.clusterId || "—";
  $("leader").textContent = q && Number(q.leaderId) ? `controller ${q.leaderId}` : "none known";
  $("term").textContent = q ? String(q.term || 0) : "—";
  $("self").textContent = q ? String(q.answeredBy || "—") : "—";
  const conn = $("conn");
  // Announced on change only (it is a live region): no version in it.
  const text = page.connected ? "live" : page.connText || "connecting…";
  if (conn.textContent !== text) conn.textContent = text;
  conn.className = page.connected ? "conn live" : "conn down";
}

// currentView reads the route from the hash (#/view/arg); another hash
// (the skip link's #main) keeps the view shown.
let shown = { view: "overview", arg: "" };
function currentView() {
  if (!location.hash.startsWith("#/")) return shown;
  const [, view = "overview", ...rest] = location.hash.split("/");
  shown = { view: ["overview", "brokers", "topics", "balancing"].includes(view) ? view : "overview", arg: decodeURIComponent(rest.join("/")) };
  return shown;
}

function renderView() {
  const { view, arg } = currentView();
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "overview") renderOverview();
  if (view === "brokers") renderBrokers();
  if (view === "topics") renderTopics(arg);
  if (view === "balancing") renderBalancing();
}

function counts() {
  const replicas = new Map();
  const leaders = new Map();
  for (const b of state.brokers.keys()) { replicas.set(b, 0); leaders.set(b, 0); }
  let partitions = 0, off = 0, under = 0, moves = 0;
  for (const t of state.topics.values()) {
    for (const p of t.partitions) {
      if (!p) continue;
      partitions++;
      if (offline(p)) off++;
      else if (underReplicated(p)) under++;
      if (moving(p)) moves++;
      for (const r of p.replicas) replicas.set(r, (replicas.get(r) || 0) + 1);
      if (p.leader > 0) leaders.set(p.leader, (leaders.get(p.leader) || 0) + 1);
    }
  }
  return { replicas, leaders, partitions, off, under, moves };
}

function renderOverview() {
  const q = page.quorum;
  const rows = (q?.members || []).map((m) => {
    const id = Number(m.nodeId);
    const voter = m.role !== "QUORUM_ROLE_LEARNER";
    const known = q.progressKnown;
    const role = `${voter ? "voter" : "learner"}${m.isLeader ? " · leader" : ""}`;
    const action = voter && !m.isLeader
      ? el("button", { type: "button", class: "admin", "data-id": id, "aria-label": `Make leader: controller ${id}` }, "Make leader")
      : "";
    return {
      key: String(id),
      cells: [String(id), m.url || "", role, known ? String(m.matchIndex || 0) : "—", known ? String(m.lag || 0) : "—",
        known ? (m.recentActive ? "yes" : el("span", { class: "bad" }, "unreachable")) : "—", action],
    };
  });
  setRows($("controllers"), rows, "no answer from the controller yet", 7);

  const c = counts();
  const brokers = state.sortedBrokers();
  const live = brokers.filter((b) => b.alive).length;
  const fenced = brokers.filter((b) => b.fenced).length;
  const facts = [
    ["Brokers", `${brokers.length} (${live} live, ${fenced} fenced)`],
    ["Topics", String(state.topics.size)],
    ["Partitions", String(c.partitions)],
    ["Offline partitions", c.off ? el("span", { class: "bad" }, String(c.off)) : "0"],
    ["Under-replicated", c.under ? el("span", { class: "warn" }, String(c.under)) : "0"],
    ["Moving", String(c.moves)],
  ];
  $("summary").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

  renderChart(brokers, c);
  const changes = page.leaderChanges.slice(-8).reverse().map((x) =>
    el("li", {}, `${x.at.toLocaleTimeString()}: ${x.leader ? `controller ${x.leader}` : "no leader"}, term ${x.term}`));
  $("leader-changes").replaceChildren(...(changes.length ? changes : [el("li", { class: "note" }, "none yet")]));
}

// renderChart draws replicas and leaderships per broker as bars.
function renderChart(brokers, c) {
  const ns = "http://www.w3.org/2000/svg";
  const row = 26, left = 120, width = 700, top = 24;
  const max = Math.max(1, ...brokers.map((b) => c.replicas.get(b.id) || 0));
  const svg = document.createElementNS(ns, "svg");
  const height = top + Math.max(1, brokers.length) * row + 8;
  svg.setAttribute("viewBox", `0 0 ${width + left + 60} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", brokers.map((b) => `broker ${b.id}: ${c.replicas.get(b.id) || 0} replicas, leads ${c.leaders.get(b.id) || 0}`).join("; ") || "no brokers");
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
  };
  add("rect", { x: left, y: 4, width: 12, height: 12, class: "replicas" });
  add("text", { x: left + 18, y: 14 }, "replicas");
  add("rect", { x: left + 90, y: 4, width: 12, height: 12, class: "leaders" });
  add("text", { x: left + 108, y: 14 }, "leaderships");
  brokers.forEach((b, i) => {
    const y = top + i * row;
    const r = c.replicas.get(b.id) || 0, l = c.leaders.get(b.id) || 0;
    add("text", { x: 0, y: y + 15 }, `broker ${b.id}${b.alive ? "" : " (down)"}`);
    add("rect", { x: left, y: y + 2, width: (r / max) * width, height: 10, class: "replicas" });
    add("rect", { x: left, y: y + 12, width: (l / max) * width, height: 8, class: "leaders" });
    add("text", { x: left + (r / max) * width + 6, y: y + 15 }, `${r} / ${l}`);
  });
  $("chart").replaceChildren(svg);
}

function brokerState(b) {
  if (b.fenced) return el("span", { class: "state-fenced" }, "fenced");
  if (b.shuttingDown) return el("span", { class: "state-shutdown" }, "shutting down");
  return el("span", { class: "state-live" }, "live");
}

function renderBrokers() {
  const c = counts();
  const rows = state.sortedBrokers().map((b) => {
    const s = page.sessions.get(b.id);
    // Protobuf's JSON leaves a 0 out: absent is 0, -1 is unknown.
    const version = s ? Number(s.heldVersion ?? 0) : -1;
    const held = s ? (version >= 0 ? String(version) : "unknown") : "—";
    const lag = s ? (version >= 0 ? String(Number(s.lag ?? 0)) : "—") + (s.pushFailing ? " (pushes failing)" : "") : "—";
    return {
      key: String(b.id),
      cells: [String(b.id), `${b.host}:${b.port}`, b.rack || "—", brokerState(b), String(b.epoch),
        String(c.replicas.get(b.id) || 0), String(c.leaders.get(b.id) || 0),
        s ? age(Number(s.heartbeatAgeMs ?? 0)) : "—", held, lag],
    };
  });
  setRows($("brokers"), rows, "no broker registered", 10);
  $("sessions-note").textContent = page.sessionsNote;
}

function configSummary(t) {
  const parts = [];
  const c = t.config;
  if (c.retentionMs) parts.push(`retention.ms=${c.retentionMs}`);
  if (c.retentionBytes) parts.push(`retention.bytes=${c.retentionBytes}`);
  if (c.segmentBytes) parts.push(`segment.bytes=${c.segmentBytes}`);
  if (c.minIsr) parts.push(`min.insync.replicas=${c.minIsr}`);
  if (c.compression) parts.push(`compression.type=${c.compression}`);
  if (c.unclean) parts.push("unclean.leader.election.enable=true");
  return parts.join(" · ") || "—";
}

function renderTopics(selected) {
  const needle = page.search.toLowerCase();
  const topics = state.sortedTopics().filter((t) => t.name.toLowerCase().includes(needle));
  const shown = topics.slice(0, 500);
  const rows = shown.map((t) => {
    const ps = t.partitions.filter(Boolean);
    const off = ps.filter(offline).length;
    const under = ps.filter((p) => !offline(p) && underReplicated(p)).length;
    return {
      key: t.name,
      class: t.name === selected ? "selected" : undefined,
      cells: [el("a", { href: `#/topics/${encodeURIComponent(t.name)}`, "aria-current": t.name === selected ? "true" : undefined }, t.name), String(ps.length), String(t.rf), configSummary(t),
        off ? el("span", { class: "bad" }, String(off)) : "0", under ? el("span", { class: "warn" }, String(under)) : "0"],
    };
  });
  setRows($("topics"), rows, needle ? "no topic matches" : "no topics", 6);
  $("topic-count").textContent = `${topics.length} of ${state.topics.size} topics${topics.length > shown.length ? `, first ${shown.length} shown` : ""}`;

  const t = selected ? state.topics.get(selected) : null;
  $("topic-detail").hidden = !t;
  if (!t) {
    detailShown = "";
    return;
  }
  $("h-detail").textContent = `Topic ${t.name}`;
  $("detail-facts").textContent = `id ${t.id} · replication factor ${t.rf} · ${configSummary(t)}`;
  const all = t.partitions.filter(Boolean);
  const prows = all.slice(0, partitionRowsMax).map((p) => ({
    key: String(p.index),
    header: true,
    class: offline(p) ? "offline" : underReplicated(p) ? "under" : undefined,
    cells: [String(p.index), p.leader > 0 ? String(p.leader) : "none", list(p.replicas), list(p.isr), list(p.elr),
      String(p.leaderEpoch), String(p.partitionEpoch),
      moving(p) ? `adding ${list(p.adding)}; removing ${list(p.removing)}` : "—"],
  }));
  setRows($("partitions"), prows, "no partitions", 8);
  $("partitions-more").textContent = all.length > partitionRowsMax ? `first ${partitionRowsMax} of ${all.length} partitions shown` : "";
  if (detailShown !== t.name) {
    detailShown = t.name;
    $("topic-detail").scrollIntoView({ block: "start" });
  }
}
const partitionRowsMax = 1000;
let detailShown = "";

function renderBalancing() {
  const b = page.balance;
  const facts = b && !Number(b.sinceVersion || 0) ? [
    ["Status", "no balancing plan recorded yet"], ["Partitions moving now", String(b.moving || 0)],
  ] : b ? [
    ["Recorded at version", String(b.sinceVersion)],
    ["Moves planned", String(b.planned || 0)], ["Started", String(b.started || 0)], ["Skipped", String(b.skipped || 0)],
    ["Waiting", String(b.pending || 0)], ["At most moving at once", String(b.maxMoving || 0)],
    ["Decommissioning", list((b.draining || []).map(String))], ["Partitions moving now", String(b.moving || 0)],
  ] : [["Status", page.balanceNote || "asking the controller…"]];
  $("balance").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const rows = [];
  for (const t of state.sortedTopics()) {
    for (const p of t.partitions) {
      if (p && moving(p)) {
        rows.push({ key: `${t.name}-${p.index}`, cells: [`${t.name}-${p.index}`, list(p.replicas), list(p.adding), list(p.removing), list(p.isr), p.leader > 0 ? String(p.leader) : "none"] });
      }
    }
  }
  setRows($("moves"), rows, "no partition is moving", 6);
}

// --- the controllers' state, asked for every two seconds ---------------------

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    await pollOnce();
  } finally {
    polling = false;
  }
}

async function pollOnce() {
  try {
    const q = await call(services.quorum, "DescribeQuorum");
    const leader = Number(q.leaderId || 0), term = Number(q.term || 0);
    // A controller answering from an older term (partitioned) says nothing
    // newer than what was seen.
    if (page.lastLeader && term < page.lastLeader.term) throw new ApiError("stale", "an older term");
    page.quorum = q;
    if (!page.lastLeader || page.lastLeader.leader !== leader || page.lastLeader.term !== term) {
      page.lastLeader = { leader, term };
      page.leaderChanges.push({ at: new Date(), leader, term });
      if (page.leaderChanges.length > 50) page.leaderChanges.shift();
    }
  } catch (e) {
    if (e instanceof ApiError && e.code === "unauthenticated") askToken();
  }
  try {
    const s = await call(services.metadata, "DescribeBrokerSessions");
    page.sessions = new Map((s.sessions || []).map((x) => [Number(x.brokerId), x]));
    page.sessionsNote = `Heartbeats and push lag as the active controller (${s.answeredBy}) sees them.`;
  } catch (e) {
    page.sessions = new Map();
    const leader = page.quorum?.members?.find((m) => m.isLeader);
    page.sessionsNote = e.code === "unavailable" && leader
      ? `Heartbeats and push lag are known to the active controller only: open its console at ${leader.url}/ui/.`
      : `Heartbeats and push lag: ${e.message}`;
  }
  try {
    page.balance = (await call(services.metadata, "DescribeBalance", { allowStale: true })).status || {};
  } catch (e) {
    page.balance = null;
    page.balanceNote = e.message;
  }
  render();
}

// --- the watch ---------------------------------------------------------------

let watchAbort = null;

async function follow() {
  for (;;) {
    watchAbort = new AbortController();
    try {
      await watch(state.version, (msg) => {
        if (msg.delta && !state.applyDelta(msg.delta)) {
          // Not the delta after the version held: start again from a
          // full state.
          state.version = 0;
          throw new ApiError("out_of_order", "a delta out of order");
        }
        if (msg.fullState) state.applyFull(msg.fullState);
        page.connected = true;
        render();
      }, watchAbort.signal);
    } catch (e) {
      if (e.name === "AbortError" || e.code === "out_of_order") {
        page.connText = "reconnecting…";
      } else if (e instanceof ApiError && e.code === "unauthenticated") {
        page.connText = "a token is needed";
        askToken();
      } else {
        page.connText = `disconnected (${e.message}): retrying…`;
      }
    }
    page.connected = false;
    render();
    await new Promise((r) => setTimeout(r, watchAbort.signal.aborted ? 0 : 1000));
  }
}

// --- actions -----------------------------------------------------------------

async function act(what, fn) {
  try {
    const result = await fn();
    notice(`${what}: done${result?.metadataVersion ? ` (version ${result.metadataVersion})` : ""}.`, true);
    return true;
  } catch (e) {
    refused(what, e);
    return false;
  }
}

async function transferLeader(id) {
  await act(`Making controller ${id} the leader`, () => call(services.quorum, "TransferLeader", { targetNodeId: String(id) }));
  poll();
}

function confirm(text, yes) {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = yes;
  dialog.returnValue = ""; // Esc leaves it as it is: no answer
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

let tokenAsked = false;
function askToken() {
  const dialog = $("token-dialog");
  if (tokenAsked || dialog.open) return;
  tokenAsked = true;
  openTokenDialog();
}

function openTokenDialog() {
  const dialog = $("token-dialog");
  $("token-input").value = "";
  dialog.showModal();
}

function wire() {
  window.addEventListener("hashchange", () => { render(); $("main").focus({ preventScroll: true }); });
  $("topic-search").addEventListener("input", (e) => { page.search = e.target.value; render(); });
  $("token-button").addEventListener("click", openTokenDialog);
  $("controllers").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-id]");
    if (button) transferLeader(Number(button.dataset.id));
  });
  // The choice is taken when the form is submitted, before the dialog
  // closes (its close event comes later, as a task of its own): a call
  // made right after already carries the new token. Esc submits nothing.
  $("token-form").addEventListener("submit", (e) => {
    const choice = e.submitter?.value;
    if (choice === "use") setToken($("token-input").value);
    if (choice === "forget") setToken("");
    $("token-input").value = "";
    $("token-button").textContent = hasToken() ? "Token ✓" : "Token…";
    // Cancelled, the page does not ask again by itself (the Token button
    // does); a new token, or none, may be refused again: then it asks.
    if (choice === "use" || choice === "forget") {
      tokenAsked = false;
      watchAbort?.abort();
      poll();
    }
  });
  $("create-topic").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("new-name").value.trim();
    const request = { name, partitions: Number($("new-partitions").value) };
    const rf = Number($("new-rf").value);
    if (rf > 0) request.replicationFactor = rf;
    if (await act(`Creating topic ${name}`, () => call(services.metadata, "CreateTopic", request))) $("new-name").value = "";
  });
  $("delete-topic").addEventListener("click", async () => {
    const { arg } = currentView();
    if (!arg || !(await confirm(`Delete topic ${arg} and all its partitions? This cannot be undone.`, `Delete ${arg}`))) return;
    if (await act(`Deleting topic ${arg}`, () => call(services.metadata, "DeleteTopic", { name: arg }))) location.hash = "#/topics";
  });
  $("elect-topic").addEventListener("click", () => {
    const { arg } = currentView();
    act(`Electing the preferred leaders of ${arg}`, () => call(services.metadata, "ElectLeaders", { targets: [{ topic: arg }] }));
  });
  $("elect-all").addEventListener("click", () =>
    act("Electing preferred leaders everywhere", () => call(services.metadata, "ElectLeaders", {})));
}

// The page's own count of what its Content-Security-Policy blocked: none,
// ever (ui/console_test.go checks it).
window.consoleViolations = 0;
document.addEventListener("securitypolicyviolation", () => { window.consoleViolations++; });

wire();
render();
follow();
poll();
setInterval(poll, pollInterval);
