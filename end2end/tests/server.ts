/**
 * Starts the Banter release binary for a test, and the Playwright fixtures built on it.
 *
 * Each test gets its own server on a fresh loopback port, so tests never share names,
 * rooms or history. The binary embeds its web assets, so it runs from any directory.
 *
 *   BANTER_BIN      path of the server binary (default: ../target/release/banter)
 *   BANTER_CLUSTER  N (at least 2): each test's "server" is N nodes as one chat, on a
 *                   fresh PostgreSQL database and a private Redis, behind HAProxy
 *                   (cluster.ts); `url` is HAProxy's, so each browser and each page load
 *                   lands on whichever node the round robin picks
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  test as base,
  expect,
  type Browser,
  type BrowserContext,
  type Page,
  type TestInfo,
} from "@playwright/test";
import {
  freePort,
  freshPostgresDatabase,
  sleep,
  startHaproxy,
  startRedis,
  stopHelper,
} from "./cluster";

export { freePort, sleep };

/** The binary under test, absolute. */
export const BANTER_BIN = path.resolve(
  __dirname,
  "..",
  process.env.BANTER_BIN ?? path.join("..", "target", "release", "banter"),
);

/** How many nodes each test's server is (1: a single server on SQLite). */
export const CLUSTER_NODES = Math.max(1, Number(process.env.BANTER_CLUSTER ?? "1") || 1);

const READY_DEADLINE_MS = 20_000;
const STOP_GRACE_MS = 10_000;
const LOG_LIMIT = 2_000_000;

export interface ServerOptions {
  /** Binary to run (default BANTER_BIN). */
  bin?: string;
  /** Working directory (default: this folder). */
  cwd?: string;
  /** The whole environment of the child (default: ours plus RUST_LOG=info, NO_COLOR=1). */
  env?: NodeJS.ProcessEnv;
  /** Port to use (default: a free one). */
  port?: number;
  /** More command-line flags, e.g. lower rate limits. */
  args?: string[];
}

export interface StopResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when the server ignored SIGTERM for STOP_GRACE_MS and was killed with SIGKILL. */
  forced: boolean;
  /** Milliseconds from SIGTERM to exit. */
  ms: number;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
});

/** One running banter process. */
interface Node {
  child: ChildProcess;
  exited: Promise<void>;
  /** Set once it exited or failed to spawn. */
  exitInfo: string | null;
}

/** What a cluster runs beside its nodes. */
interface ClusterHelpers {
  redis: ChildProcess;
  redisUrl: string;
  haproxy: ChildProcess | null;
  /** The nodes' own ports, behind HAProxy's `port`. */
  nodePorts: number[];
}

export class BanterServer {
  readonly bin: string;
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /**
   * Where this server stores, kept across restarts: a SQLite file, or with
   * BANTER_CLUSTER a PostgreSQL database's URL.
   */
  readonly database: string;
  readonly port: number;
  readonly url: string;
  readonly args: string[];
  /** Every start, SIGTERM and exit, with the server's stdout and stderr, in order. */
  private log = "";
  private nodes: Node[] = [];
  private cluster: ClusterHelpers | null;
  /** Stop results, one per stop(); a test may inspect them. */
  readonly stops: StopResult[] = [];

  private constructor(
    opts: Required<ServerOptions>,
    database: string,
    cluster: ClusterHelpers | null,
  ) {
    this.bin = opts.bin;
    this.cwd = opts.cwd;
    this.env = opts.env;
    this.port = opts.port;
    this.args = opts.args;
    this.url = `http://127.0.0.1:${opts.port}`;
    this.database = database;
    this.cluster = cluster;
  }

  static async start(opts: ServerOptions = {}): Promise<BanterServer> {
    const bin = path.resolve(opts.bin ?? BANTER_BIN);
    if (!fs.existsSync(bin)) {
      throw new Error(
        `Banter binary not found at ${bin}. Build it first (scripts/build-release) ` +
          `or point BANTER_BIN at it.`,
      );
    }
    let port = opts.port;
    let database: string;
    let cluster: ClusterHelpers | null = null;
    if (CLUSTER_NODES > 1) {
      database = await freshPostgresDatabase();
      const redis = await startRedis();
      // Picked once PostgreSQL and Redis listen. Each port is free when picked but none
      // is bound until the nodes start: never the same one twice (a node on HAProxy's
      // port would take its clients directly).
      port ??= await freePort();
      const nodePorts: number[] = [];
      while (nodePorts.length < CLUSTER_NODES) {
        const candidate = await freePort();
        if (candidate !== port && !nodePorts.includes(candidate)) nodePorts.push(candidate);
      }
      cluster = { redis: redis.child, redisUrl: redis.url, haproxy: null, nodePorts };
    } else {
      port ??= await freePort();
      database = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "banter-db-")), "banter.db");
    }
    const server = new BanterServer(
      {
        bin,
        cwd: opts.cwd ?? path.resolve(__dirname, ".."),
        env: opts.env ?? { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
        port,
        args: opts.args ?? [],
      },
      database,
      cluster,
    );
    try {
      await server.launch();
      if (cluster) {
        cluster.haproxy = await startHaproxy(server.port, cluster.nodePorts);
        await server.waitAnswering(server.url, "HAProxy");
      }
    } catch (err) {
      await server.dispose();
      throw err;
    }
    return server;
  }

  /** The server's output so far (stdout and stderr interleaved; each node's tagged). */
  output(): string {
    return this.log;
  }

  get running(): boolean {
    return this.nodes.length > 0;
  }

  private note(line: string) {
    this.append(`[e2e ${new Date().toISOString()}] ${line}\n`);
  }

  private append(text: string) {
    this.log += text;
    if (this.log.length > LOG_LIMIT) {
      this.log = "[...earlier output dropped...]\n" + this.log.slice(-LOG_LIMIT / 2);
    }
  }

  /** Starts every node and waits until each answers `GET /` with 200. */
  private async launch(): Promise<void> {
    const storage = this.cluster ? this.database : `sqlite://${this.database}`;
    const ports = this.cluster?.nodePorts ?? [this.port];
    const shared = this.cluster
      ? ["--redis", this.cluster.redisUrl, "--client-ip-header", "X-Forwarded-For"]
      : [];
    ports.forEach((port, n) => {
      const tag = this.cluster ? `[n${n}] ` : "";
      const args = ["--addr", `127.0.0.1:${port}`, "--database", storage, ...shared, ...this.args];
      this.nodes.push(this.spawnNode(tag, args));
    });
    try {
      await Promise.all(
        ports.map((port, n) => this.waitAnswering(`http://127.0.0.1:${port}`, "", this.nodes[n])),
      );
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  private spawnNode(tag: string, args: string[]): Node {
    this.note(`${tag}spawn ${this.bin} ${args.join(" ")} (cwd ${this.cwd})`);
    const child = spawn(this.bin, args, {
      cwd: this.cwd,
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    live.add(child);
    const tagged = (d: string) => this.append(tag ? d.replace(/^(?=.)/gm, tag) : d);
    child.stdout?.setEncoding("utf8").on("data", tagged);
    child.stderr?.setEncoding("utf8").on("data", tagged);
    const node: Node = { child, exited: Promise.resolve(), exitInfo: null };
    node.exited = new Promise<void>((resolve) => {
      const gone = (info: string) => {
        node.exitInfo = info;
        this.note(`${tag}${info}`);
        live.delete(child);
        resolve();
      };
      child.on("error", (err) => gone(`spawn error: ${err.message}`));
      child.on("exit", (code, signal) => gone(`exited with code ${code} signal ${signal}`));
    });
    return node;
  }

  /** Waits until `url` answers `GET /` with 200 (failing early if `node` exits). */
  private async waitAnswering(url: string, what: string, node?: Node): Promise<void> {
    const deadline = Date.now() + READY_DEADLINE_MS;
    let lastError = "no attempt";
    while (Date.now() < deadline) {
      if (node?.exitInfo) {
        throw new Error(`Banter server ${node.exitInfo} before answering.\n${this.output()}`);
      }
      try {
        const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer().catch(() => undefined);
        if (res.status === 200) {
          this.note(`ready: GET ${url}/ ${what} answered 200`);
          return;
        }
        lastError = `GET / answered ${res.status}`;
      } catch (err) {
        lastError = String((err as Error)?.cause ?? err);
      }
      await sleep(100);
    }
    throw new Error(
      `${what || "Banter server"} at ${url} did not answer GET / with 200 within ` +
        `${READY_DEADLINE_MS} ms (last: ${lastError}).\n${this.output()}`,
    );
  }

  /**
   * SIGTERM to every node, wait for their exits; SIGKILL to any still running after
   * STOP_GRACE_MS. The result is the slowest node's.
   */
  async stop(): Promise<StopResult> {
    const nodes = this.nodes;
    this.nodes = [];
    if (nodes.length === 0) {
      return { code: null, signal: null, forced: false, ms: 0 };
    }
    const started = Date.now();
    const results = await Promise.all(
      nodes.map(async (node) => {
        this.note(`SIGTERM pid ${node.child.pid}`);
        node.child.kill("SIGTERM");
        let forced = false;
        const timer = sleep(STOP_GRACE_MS).then(() => "timeout" as const);
        if ((await Promise.race([node.exited.then(() => "exited" as const), timer])) === "timeout") {
          forced = true;
          this.note(`pid ${node.child.pid} still running ${STOP_GRACE_MS} ms after SIGTERM: SIGKILL`);
          node.child.kill("SIGKILL");
          await node.exited;
        }
        const result: StopResult = {
          code: node.child.exitCode,
          signal: node.child.signalCode,
          forced,
          ms: Date.now() - started,
        };
        return result;
      }),
    );
    const slowest = results.reduce((a, b) => (b.forced || b.ms > a.ms ? b : a));
    this.stops.push(slowest);
    return slowest;
  }

  /** Starts the binary again on the same port (stopping it first if it runs). */
  async restart(): Promise<void> {
    if (this.nodes.length > 0) await this.stop();
    await this.launch();
  }

  /** After the last stop: removes the SQLite file, or stops HAProxy and Redis. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.cluster) {
      if (this.cluster.haproxy) await stopHelper(this.cluster.haproxy);
      await stopHelper(this.cluster.redis);
    } else {
      fs.rmSync(path.dirname(this.database), { recursive: true, force: true });
    }
  }
}
// ---------------------------------------------------------------------------------------
// Fixtures

export interface UserOptions {
  /** Path to open, default "/". */
  path?: string;
  viewport?: { width: number; height: number };
  deviceScaleFactor?: number;
  /** Open the page and wait for hydration, but do not wait for the connection. */
  noWait?: boolean;
}

export interface User {
  name: string;
  context: BrowserContext;
  page: Page;
  /** Uncaught page errors and Rust panics seen so far. */
  errors: string[];
  /** The page's Socket.IO traffic (WebSocket frames), attached when the test fails. */
  frames: string[];
}

export type OpenUser = (name: string, opts?: UserOptions) => Promise<User>;

/** A server for this test only; its output is printed when the test fails. */
export async function serverFixture(
  opts: ServerOptions,
  use: (s: BanterServer) => Promise<void>,
  testInfo: TestInfo,
): Promise<void> {
  const server = await BanterServer.start(opts);
  try {
    await use(server);
  } finally {
    await server.dispose();
    const logFile = testInfo.outputPath("server-output.txt");
    fs.writeFileSync(logFile, server.output());
    await testInfo.attach("server-output.txt", { path: logFile, contentType: "text/plain" });
    if (testInfo.status !== testInfo.expectedStatus) {
      console.log(
        `\n----- Banter server output (${testInfo.title}) -----\n${server.output()}` +
          `----- end of server output -----\n`,
      );
    }
  }
}

/**
 * Opens a browser context for one person, loads a page and waits until the wasm has
 * hydrated and the socket is online. The contexts are closed at the end of the test;
 * uncaught page errors or Rust panics in any of them fail the test.
 */
export async function userFixture(
  browser: Browser,
  baseURL: string,
  use: (open: OpenUser) => Promise<void>,
  testInfo: TestInfo,
): Promise<void> {
  const users: User[] = [];
  const open: OpenUser = async (name, opts = {}) => {
    const context = await browser.newContext({
      baseURL,
      viewport: opts.viewport ?? { width: 1100, height: 760 },
      deviceScaleFactor: opts.deviceScaleFactor ?? 1,
    });
    const page = await context.newPage();
    const user: User = { name, context, page, errors: [], frames: [] };
    users.push(user);
    page.on("pageerror", (err) => user.errors.push(`pageerror: ${err.message}`));
    page.on("websocket", (ws) => {
      const log = (dir: string, payload: string | Buffer) => {
        if (user.frames.length >= 5_000) return;
        const text = typeof payload === "string" ? payload : `<${payload.length} bytes>`;
        user.frames.push(`${new Date().toISOString()} ${dir} ${text.slice(0, 500)}`);
      };
      log("open", ws.url());
      ws.on("framesent", (f) => log("→", f.payload));
      ws.on("framereceived", (f) => log("←", f.payload));
      ws.on("socketerror", (e) => log("error", e));
      ws.on("close", () => log("close", ""));
    });
    page.on("console", (msg) => {
      const text = msg.text();
      if (/panicked at|RuntimeError: unreachable/.test(text)) {
        user.errors.push(`console ${msg.type()}: ${text}`);
      }
    });
    await page.goto(opts.path ?? "/");
    await waitHydrated(page);
    if (!opts.noWait) await waitOnline(page);
    return user;
  };
  await use(open);
  const failed = testInfo.status !== testInfo.expectedStatus;
  for (const user of users) {
    if (failed && !user.page.isClosed()) {
      const shotFile = testInfo.outputPath(`${user.name}-at-failure.png`);
      const shot = await user.page.screenshot({ fullPage: true, path: shotFile }).catch(() => null);
      if (shot) {
        await testInfo.attach(`${user.name}-at-failure.png`, {
          path: shotFile,
          contentType: "image/png",
        });
      }
    }
    if (failed) {
      const framesFile = testInfo.outputPath(`${user.name}-socket-frames.txt`);
      fs.writeFileSync(framesFile, user.frames.join("\n"));
      await testInfo.attach(`${user.name}-socket-frames.txt`, {
        path: framesFile,
        contentType: "text/plain",
      });
    }
    await user.context.close().catch(() => undefined);
  }
  const errors = users.flatMap((u) => u.errors.map((e) => `${u.name}: ${e}`));
  if (errors.length > 0 && !failed) {
    throw new Error(`The page reported errors:\n${errors.join("\n")}`);
  }
  if (errors.length > 0) console.log(`Page errors:\n${errors.join("\n")}`);
}

/** The `test` of this suite, its server started with `opts` (e.g. extra flags). */
export function testWith(opts: ServerOptions) {
  return base.extend<{ server: BanterServer; openUser: OpenUser }>({
    server: async ({}, use, testInfo) => serverFixture(opts, use, testInfo),
    baseURL: async ({ server }, use) => use(server.url),
    openUser: async ({ browser, server }, use, testInfo) =>
      userFixture(browser, server.url, use, testInfo),
  });
}

export const test = testWith({});

export { expect };

// ---------------------------------------------------------------------------------------
// The UI contract, as locators and steps.

/** Waits for `#banter[data-hydrated="true"]`. */
export async function waitHydrated(page: Page): Promise<void> {
  await expect(page.locator("#banter"), "the wasm client hydrates the page").toHaveAttribute(
    "data-hydrated",
    "true",
    { timeout: 20_000 },
  );
}

/** Waits for `#banter[data-connection="online"]`. */
export async function waitOnline(page: Page, timeout = 20_000): Promise<void> {
  await expect(page.locator("#banter"), "the socket connects").toHaveAttribute(
    "data-connection",
    "online",
    { timeout },
  );
}

/** Fills "Name", clicks "Join" and waits for the "Message" field. */
export async function join(page: Page, name: string): Promise<void> {
  await page.getByLabel("Name", { exact: true }).fill(name);
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
}

/** Opens a person's page and joins under their name. */
export async function openAndJoin(openUser: OpenUser, name: string, opts?: UserOptions) {
  const user = await openUser(name, opts);
  await join(user.page, name);
  return user;
}

/** Fills "Message" and clicks "Send". */
export async function send(page: Page, text: string): Promise<void> {
  await page.getByLabel("Message", { exact: true }).fill(text);
  await page.getByRole("button", { name: "Send", exact: true }).click();
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The `li.message` items of the log whose `.text` is exactly `text`. */
export function messageItem(page: Page, text: string) {
  return page
    .getByRole("log")
    .locator("li.message")
    .filter({
      has: page.locator(".text", { hasText: new RegExp(`^\\s*${escapeRegExp(text)}\\s*$`) }),
    });
}

/** The `li.notice` items of the log containing `text` (e.g. "bob joined"). */
export function notice(page: Page, text: string) {
  return page.getByRole("log").locator("li.notice", { hasText: text });
}

/** The "Online" member list. */
export function onlineList(page: Page) {
  return page.locator('[aria-label="Online"]');
}

/** The entry for `name` in the "Online" list. */
export function onlineEntry(page: Page, name: string) {
  return onlineList(page)
    .locator("li")
    .filter({ hasText: new RegExp(`(^|\\W)${escapeRegExp(name)}(\\W|$)`) });
}

/** The connection banner ("Reconnecting…"). */
export function reconnectBanner(page: Page) {
  return page.getByRole("status").filter({ hasText: "Reconnecting" });
}

/**
 * Starts recording every `data-status` value that each `li.message` takes (including the
 * value it had when it was inserted), so that a test can see a state that lasted only
 * a few milliseconds.
 */
export async function recordStatuses(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as {
      __statusLog?: { el: Element; status: string | null }[];
    };
    if (w.__statusLog) return;
    const entries: { el: Element; status: string | null }[] = [];
    w.__statusLog = entries;
    const record = (el: Element) => entries.push({ el, status: el.getAttribute("data-status") });
    new MutationObserver((mutations) => {
      for (const m of mutations) {
        if (m.type === "attributes") {
          const el = m.target as Element;
          if (el.matches("li.message")) record(el);
          continue;
        }
        m.addedNodes.forEach((node) => {
          if (!(node instanceof Element)) return;
          if (node.matches("li.message")) record(node);
          node.querySelectorAll("li.message").forEach(record);
        });
      }
    }).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ["data-status"],
    });
  });
}

/** The `data-status` values recorded for the message whose text is `text`, in order. */
export async function recordedStatuses(page: Page, text: string): Promise<(string | null)[]> {
  return page.evaluate((text) => {
    const w = window as unknown as { __statusLog?: { el: Element; status: string | null }[] };
    const out: (string | null)[] = [];
    for (const { el, status } of w.__statusLog ?? []) {
      if (el.querySelector(".text")?.textContent?.trim() === text) {
        if (out[out.length - 1] !== status) out.push(status);
      }
    }
    return out;
  }, text);
}
