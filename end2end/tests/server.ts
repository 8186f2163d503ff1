/**
 * Starts the Banter release binary for a test, and the Playwright fixtures built on it.
 *
 * Each test gets its own server on a fresh loopback port, so tests never share names,
 * rooms or history. The binary embeds its web assets, so it runs from any directory.
 *
 *   BANTER_BIN  path of the server binary (default: ../target/release/banter)
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
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

/** The binary under test, absolute. */
export const BANTER_BIN = path.resolve(
  __dirname,
  "..",
  process.env.BANTER_BIN ?? path.join("..", "target", "release", "banter"),
);

const READY_DEADLINE_MS = 20_000;
const STOP_GRACE_MS = 10_000;
const LOG_LIMIT = 2_000_000;

/** A free loopback port: bind port 0, read the port the kernel gave, close. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error("could not read the port of a loopback listener"));
        return;
      }
      const port = addr.port;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

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

export class BanterServer {
  readonly bin: string;
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /** The SQLite file this server writes; kept across restarts. */
  readonly database: string;
  readonly port: number;
  readonly url: string;
  readonly args: string[];
  /** Every start, SIGTERM and exit, with the server's stdout and stderr, in order. */
  private log = "";
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  /** Stop results, one per stop(); a test may inspect them. */
  readonly stops: StopResult[] = [];

  private constructor(opts: Required<ServerOptions>) {
    this.bin = opts.bin;
    this.cwd = opts.cwd;
    this.env = opts.env;
    this.port = opts.port;
    this.args = opts.args;
    this.url = `http://127.0.0.1:${opts.port}`;
    this.database = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "banter-db-")), "banter.db");
  }

  static async start(opts: ServerOptions = {}): Promise<BanterServer> {
    const bin = path.resolve(opts.bin ?? BANTER_BIN);
    if (!fs.existsSync(bin)) {
      throw new Error(
        `Banter binary not found at ${bin}. Build it first (cargo leptos build --release) ` +
          `or point BANTER_BIN at it.`,
      );
    }
    const server = new BanterServer({
      bin,
      cwd: opts.cwd ?? path.resolve(__dirname, ".."),
      env: opts.env ?? { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
      port: opts.port ?? (await freePort()),
      args: opts.args ?? [],
    });
    await server.launch();
    return server;
  }

  /** The server's output so far (stdout and stderr interleaved). */
  output(): string {
    return this.log;
  }

  get running(): boolean {
    return this.child !== null;
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

  private async launch(): Promise<void> {
    // A fresh database per server; a restart of the same server keeps it.
    const args = [
      "--addr",
      `127.0.0.1:${this.port}`,
      "--database",
      `sqlite://${this.database}`,
      ...this.args,
    ];
    this.note(`spawn ${this.bin} ${args.join(" ")} (cwd ${this.cwd})`);
    const child = spawn(this.bin, args, {
      cwd: this.cwd,
      env: this.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    live.add(child);
    child.stdout?.setEncoding("utf8").on("data", (d: string) => this.append(d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => this.append(d));
    let exitInfo: string | null = null;
    this.exited = new Promise<void>((resolve) => {
      child.on("error", (err) => {
        exitInfo = `spawn error: ${err.message}`;
        this.note(exitInfo);
        live.delete(child);
        if (this.child === child) this.child = null;
        resolve();
      });
      child.on("exit", (code, signal) => {
        exitInfo = `exited with code ${code} signal ${signal}`;
        this.note(exitInfo);
        live.delete(child);
        if (this.child === child) this.child = null;
        resolve();
      });
    });

    const deadline = Date.now() + READY_DEADLINE_MS;
    let lastError = "no attempt";
    while (Date.now() < deadline) {
      if (exitInfo !== null) {
        throw new Error(`Banter server ${exitInfo} before answering.\n${this.output()}`);
      }
      try {
        const res = await fetch(`${this.url}/`, { signal: AbortSignal.timeout(2_000) });
        await res.arrayBuffer().catch(() => undefined);
        if (res.status === 200) {
          this.note(`ready: GET / answered 200`);
          return;
        }
        lastError = `GET / answered ${res.status}`;
      } catch (err) {
        lastError = String((err as Error)?.cause ?? err);
      }
      await sleep(100);
    }
    await this.stop();
    throw new Error(
      `Banter server did not answer GET / with 200 within ${READY_DEADLINE_MS} ms ` +
        `(last: ${lastError}).\n${this.output()}`,
    );
  }

  /** SIGTERM, wait for the exit; SIGKILL if it has not exited after STOP_GRACE_MS. */
  async stop(): Promise<StopResult> {
    const child = this.child;
    if (child === null) {
      const r: StopResult = { code: null, signal: null, forced: false, ms: 0 };
      return r;
    }
    const started = Date.now();
    this.note("SIGTERM");
    child.kill("SIGTERM");
    let forced = false;
    const timer = sleep(STOP_GRACE_MS).then(() => "timeout" as const);
    if ((await Promise.race([this.exited.then(() => "exited" as const), timer])) === "timeout") {
      forced = true;
      this.note(`still running ${STOP_GRACE_MS} ms after SIGTERM: SIGKILL`);
      child.kill("SIGKILL");
      await this.exited;
    }
    const result: StopResult = {
      code: child.exitCode,
      signal: child.signalCode,
      forced,
      ms: Date.now() - started,
    };
    this.stops.push(result);
    return result;
  }

  /** Starts the binary again on the same port (stopping it first if it runs). */
  async restart(): Promise<void> {
    if (this.child !== null) await this.stop();
    await this.launch();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
    await server.stop();
    fs.rmSync(path.dirname(server.database), { recursive: true, force: true });
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
