/**
 * What a test needs to run Banter as several nodes (`BANTER_CLUSTER=N`, see server.ts):
 * PostgreSQL, Redis and HAProxy from Debian's packages, private to this run, on free
 * loopback ports, as docs/DEPLOY.md sets them up.
 *
 * - PostgreSQL: one server per test worker, started on first use (initdb takes seconds),
 *   and a fresh database per test (`createdb`), so tests share no history.
 * - Redis: one redis-server per test, as publications are not scoped by database number
 *   and one test's nodes must not hear another's.
 * - HAProxy: one per test, round robin over that test's nodes, with the health check
 *   DEPLOY.md uses (`GET /readyz`).
 *
 * All of it is stopped when the test's server stops, or at the latest when the worker
 * exits. PostgreSQL refuses to run as root: under root its commands run as `postgres`.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

const START_DEADLINE_MS = 20_000;

/** A helper process this module started, killed when the worker exits. */
const helpers = new Set<ChildProcess>();
const scratch = new Set<string>();
process.on("exit", () => {
  for (const child of helpers) {
    try {
      // SIGQUIT: PostgreSQL's immediate shutdown; the others die of it too.
      child.kill("SIGQUIT");
    } catch {
      /* already gone */
    }
  }
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
});

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function scratchDir(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `banter-${name}-`));
  scratch.add(dir);
  return dir;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
async function waitListening(port: number, what: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before listening`);
    }
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on port ${port} within ${START_DEADLINE_MS} ms`);
}

function firstExisting(paths: string[], install: string): string {
  const found = paths.find((p) => fs.existsSync(p));
  if (found === undefined) {
    throw new Error(`${paths[0]} is not installed: ${install} (scripts/setup test does)`);
  }
  return found;
}

/** Stops a helper: SIGTERM, SIGKILL after 5 s. */
export async function stopHelper(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM") {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  if ((await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)])) === false) {
    child.kill("SIGKILL");
    await exited;
  }
  helpers.delete(child);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

interface Postgres {
  port: number;
  bin: string;
  created: number;
}

let postgres: Promise<Postgres> | null = null;

/** Debian's PostgreSQL binaries, the newest installed. */
function postgresBin(): string {
  const root = "/usr/lib/postgresql";
  const versions = fs.existsSync(root)
    ? fs
        .readdirSync(root)
        .map(Number)
        .filter((v) => Number.isInteger(v) && fs.existsSync(`${root}/${v}/bin/initdb`))
        .sort((a, b) => b - a)
    : [];
  if (versions.length === 0) {
    throw new Error("PostgreSQL is not installed: apt-get install postgresql (scripts/setup test does)");
  }
  return `${root}/${versions[0]}/bin`;
}

/** Under root, PostgreSQL's commands run as the `postgres` user. */
function postgresIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"]).toString().trim());
  return { uid: id("-u"), gid: id("-g") };
}

async function startPostgres(): Promise<Postgres> {
  const bin = postgresBin();
  const ids = postgresIds();
  const dir = scratchDir("postgres");
  const data = path.join(dir, "data");
  const sockets = path.join(dir, "sockets");
  fs.mkdirSync(sockets);
  if (ids) execFileSync("chown", ["-R", `${ids.uid}:${ids.gid}`, dir]);
  execFileSync(
    path.join(bin, "initdb"),
    ["-D", data, "-U", "banter", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
    { cwd: dir, stdio: ["ignore", "ignore", "pipe"], ...ids },
  );
  const port = await freePort();
  const child = spawn(
    path.join(bin, "postgres"),
    [
      ...["-D", data, "-k", sockets, "-h", "127.0.0.1", "-p", String(port)],
      // A scratch database: durability is not what these tests are about.
      ...["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
      ...["-c", "max_connections=300"],
    ],
    { cwd: dir, stdio: "ignore", ...ids },
  );
  helpers.add(child);
  await waitListening(port, "postgres", child);
  // Listening is not yet accepting queries.
  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    try {
      execFileSync(path.join(bin, "pg_isready"), pgArgs(port, ["-q", "-d", "postgres"]));
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(50);
    }
  }
  return { port, bin, created: 0 };
}

function pgArgs(port: number, rest: string[]): string[] {
  return ["-h", "127.0.0.1", "-p", String(port), "-U", "banter", ...rest];
}

/** A new, empty database on this worker's PostgreSQL (started on first use): its URL. */
export async function freshPostgresDatabase(): Promise<string> {
  postgres ??= startPostgres();
  const pg = await postgres;
  const name = `banter_${process.pid}_${++pg.created}`;
  execFileSync(path.join(pg.bin, "createdb"), pgArgs(pg.port, [name]), {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return `postgres://banter@127.0.0.1:${pg.port}/${name}`;
}

// ---------------------------------------------------------------------------------------
// Redis and HAProxy

/** A private redis-server: its process and URL. */
export async function startRedis(): Promise<{ child: ChildProcess; url: string }> {
  const binary = firstExisting(
    ["/usr/bin/redis-server", "/usr/sbin/redis-server"],
    "apt-get install redis-server",
  );
  const port = await freePort();
  const child = spawn(
    binary,
    [
      ...["--port", String(port), "--bind", "127.0.0.1"],
      ...["--save", "", "--appendonly", "no", "--loglevel", "warning"],
    ],
    { stdio: "ignore" },
  );
  helpers.add(child);
  await waitListening(port, "redis-server", child);
  return { child, url: `redis://127.0.0.1:${port}` };
}

/**
 * HAProxy on `port`, round robin over `nodes` (their ports), each checked on `/readyz`
 * every 100 ms; a connection a node refuses is retried on another. Sessions stay on
 * their node by a cookie HAProxy sets (DEPLOY.md: long-polling needs that; every test
 * client comes from 127.0.0.1, so balancing by source address would put them all on one
 * node): each browser context sticks to the node its first request reached, and stock
 * clients keep it with `withCredentials: true` (their cookie jar, stock.ts).
 */
export async function startHaproxy(port: number, nodes: number[]): Promise<ChildProcess> {
  const binary = firstExisting(["/usr/sbin/haproxy", "/usr/bin/haproxy"], "apt-get install haproxy");
  const dir = scratchDir("haproxy");
  const servers = nodes
    .map((node, n) => `    server n${n} 127.0.0.1:${node} cookie n${n} check inter 100ms fall 2 rise 1\n`)
    .join("");
  const config = `global
    maxconn 1000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    retries 3
    option redispatch 1
    option forwardfor
frontend chat
    bind 127.0.0.1:${port}
    default_backend nodes
backend nodes
    balance roundrobin
    option httpchk GET /readyz
    cookie banter_node insert indirect nocache httponly
${servers}`;
  const file = path.join(dir, "haproxy.cfg");
  fs.writeFileSync(file, config);
  const child = spawn(binary, ["-db", "-f", file], { stdio: "ignore" });
  helpers.add(child);
  await waitListening(port, "haproxy", child);
  return child;
}

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
