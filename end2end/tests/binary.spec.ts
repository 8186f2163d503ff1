/**
 * The single-binary promise: the release binary, copied alone into an empty directory and
 * run there with nothing but PATH in its environment, serves the whole app.
 */
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import {
  test as base,
  expect,
  BANTER_BIN,
  messageItem,
  onlineEntry,
  send,
  serverFixture,
} from "./server";

const test = base.extend<{ lonelyDir: string }>({
  lonelyDir: async ({}, use) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "banter-single-"));
    try {
      await use(dir);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
  server: async ({ lonelyDir }, use, testInfo) => {
    const bin = path.join(lonelyDir, "banter");
    fs.copyFileSync(BANTER_BIN, bin);
    fs.chmodSync(bin, 0o755);
    expect(fs.readdirSync(lonelyDir)).toEqual(["banter"]);
    await serverFixture(
      { bin, cwd: lonelyDir, env: { PATH: process.env.PATH } },
      use,
      testInfo,
    );
  },
});

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A GET with exactly the headers given, and the body as it came on the wire. */
function rawGet(url: string, headers: Record<string, string>): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
  });
}

function decode(res: RawResponse): Buffer {
  switch (res.headers["content-encoding"]) {
    case "br":
      return zlib.brotliDecompressSync(res.body);
    case "gzip":
      return zlib.gunzipSync(res.body);
    case undefined:
    case "identity":
      return res.body;
    default:
      throw new Error(`unexpected content-encoding ${res.headers["content-encoding"]}`);
  }
}

const WASM_MAGIC = Buffer.from([0x00, 0x61, 0x73, 0x6d]);

test("the binary alone, in an empty directory with a bare environment, serves the app", async ({
  openUser,
  server,
  lonelyDir,
}) => {
  expect(server.env).toEqual({ PATH: process.env.PATH });
  expect(server.cwd).toBe(lonelyDir);

  // Which wasm does the page load? Ask the network, and the HTML.
  const wasmSeen = new Set<string>();
  const alice = await openUser("alice", { noWait: true });
  const html = await (await alice.page.request.get("/")).text();
  for (const m of html.matchAll(/["'(]([^"'()\s]+\.wasm)\b/g)) {
    wasmSeen.add(new URL(m[1], server.url).pathname);
  }
  const bob = await openUser("bob");
  bob.page.on("response", (r) => {
    if (new URL(r.url()).pathname.endsWith(".wasm")) wasmSeen.add(new URL(r.url()).pathname);
  });
  await bob.page.reload();
  await expect(bob.page.locator("#banter")).toHaveAttribute("data-hydrated", "true", {
    timeout: 20_000,
  });
  await expect(bob.page.locator("#banter")).toHaveAttribute("data-connection", "online", {
    timeout: 20_000,
  });

  // Chat works.
  await expect(alice.page.locator("#banter")).toHaveAttribute("data-connection", "online", {
    timeout: 20_000,
  });
  await alice.page.getByLabel("Name", { exact: true }).fill("alice");
  await alice.page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(alice.page.getByLabel("Message", { exact: true })).toBeVisible();
  await bob.page.getByLabel("Name", { exact: true }).fill("bob");
  await bob.page.getByRole("button", { name: "Join", exact: true }).click();
  await expect(onlineEntry(alice.page, "bob")).toBeVisible();
  await send(alice.page, "one binary, nothing else");
  await expect(messageItem(bob.page, "one binary, nothing else").locator(".author")).toHaveText(
    "alice",
  );

  // The stylesheet the page links to is served.
  const css = await alice.page.evaluate(() =>
    Array.from(document.querySelectorAll<HTMLLinkElement>('link[rel="stylesheet"]')).map(
      (l) => l.href,
    ),
  );
  expect(css.length, "the page links a stylesheet").toBeGreaterThan(0);
  for (const href of css) {
    const res = await rawGet(href, {});
    expect(res.status, href).toBe(200);
    expect(res.headers["content-type"], href).toMatch(/^text\/css/);
  }

  // The wasm is served, compressed for clients that accept it, plain for others.
  expect([...wasmSeen].length, `wasm referenced by the page: ${[...wasmSeen]}`).toBeGreaterThan(0);
  for (const wasmPath of wasmSeen) {
    const url = new URL(wasmPath, server.url).toString();
    const compressed = await rawGet(url, { "accept-encoding": "br, gzip" });
    expect(compressed.status, url).toBe(200);
    expect(compressed.headers["content-encoding"], `${url} content-encoding`).toMatch(
      /^(br|gzip)$/,
    );
    expect(compressed.headers["content-type"], url).toMatch(/^application\/wasm/);
    const wasm = decode(compressed);
    expect(wasm.subarray(0, 4).equals(WASM_MAGIC), "decoded body is WebAssembly").toBe(true);
    expect(compressed.body.length).toBeLessThan(wasm.length);

    const plain = await rawGet(url, { "accept-encoding": "identity" });
    expect(plain.status, url).toBe(200);
    expect(plain.headers["content-encoding"] ?? "identity").toBe("identity");
    expect(plain.body.equals(wasm), "plain and decoded bodies are the same").toBe(true);

    const gzipOnly = await rawGet(url, { "accept-encoding": "gzip" });
    expect(gzipOnly.headers["content-encoding"] ?? "identity").toMatch(/^(gzip|identity)$/);
    expect(decode(gzipOnly).equals(wasm)).toBe(true);
  }
});

test("the site's assets have versioned names and are cached for good, so a reload downloads none", async ({
  openUser,
  server,
}) => {
  const alice = await openUser("alice");
  const page = alice.page;
  // Every js, wasm and css the page links lives under one /a/<fingerprint>/ prefix.
  const linked = await page.evaluate(() => [
    ...Array.from(document.querySelectorAll<HTMLLinkElement>("link[href]")).map((l) => l.href),
    ...Array.from(document.querySelectorAll("script"))
      .flatMap((s) => (s.textContent ?? "").match(/"\/a\/[0-9a-f]+"/g) ?? [])
      .map((root) => JSON.parse(root) as string),
  ]);
  const assets = linked.filter((href) => /\.(js|wasm|css)$/.test(href));
  expect(assets.length, `assets linked: ${linked}`).toBeGreaterThanOrEqual(3);
  const roots = new Set(assets.map((href) => new URL(href).pathname.match(/^\/a\/([0-9a-f]{16})\//)?.[1]));
  expect([...roots], `one fingerprint for ${assets}`).toHaveLength(1);
  const [fingerprint] = [...roots];
  expect(fingerprint, "the fingerprint").toMatch(/^[0-9a-f]{16}$/);
  expect(linked, "the hydration script is given the versioned root").toContain(`/a/${fingerprint}`);

  for (const href of assets) {
    const res = await rawGet(href, { "accept-encoding": "br" });
    expect(res.status, href).toBe(200);
    expect(res.headers["cache-control"], href).toBe("public, max-age=31536000, immutable");
    // The same file under its unversioned name, or under another build's fingerprint, is
    // served too (a page from before an upgrade still loads) but must be revalidated.
    const path = new URL(href).pathname.replace(`/a/${fingerprint}`, "");
    for (const other of [path, `/a/0123456789abcdef${path}`]) {
      const res = await rawGet(new URL(other, server.url).toString(), { "accept-encoding": "br" });
      expect(res.status, other).toBe(200);
      expect(res.headers["cache-control"], other).toBe("no-cache");
    }
  }
  // The room's module, fetched long after the page started into its main module's memory,
  // is never another build's: a page of an older build gets 404 and offers to reload.
  const roomModule = `/pkg/split_room.wasm`;
  const current = await rawGet(new URL(`/a/${fingerprint}${roomModule}`, server.url).toString(), {});
  expect(current.status, "the room's module").toBe(200);
  expect(current.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
  const stale = await rawGet(new URL(`/a/0123456789abcdef${roomModule}`, server.url).toString(), {});
  expect(stale.status, "the room's module for a page of another build").toBe(404);
  for (const bad of ["/a/", `/a/${fingerprint}`, `/a/${fingerprint}/`, `/a/${fingerprint}/pkg/nothing.wasm`]) {
    expect((await rawGet(new URL(bad, server.url).toString(), {})).status, bad).toBe(404);
  }

  // A reload takes the wasm from the browser's cache, without asking the server.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  const wasmRequests = new Map<string, string>();
  const fromCache = new Set<string>();
  cdp.on("Network.requestWillBeSent", (e) => {
    if (e.request.url.endsWith(".wasm")) wasmRequests.set(e.requestId, e.request.url);
  });
  cdp.on("Network.requestServedFromCache", (e) => fromCache.add(e.requestId));
  cdp.on("Network.responseReceived", (e) => {
    if (e.response.fromDiskCache || e.response.fromPrefetchCache) fromCache.add(e.requestId);
  });
  await page.reload();
  await expect(page.locator("#banter")).toHaveAttribute("data-connection", "online", {
    timeout: 20_000,
  });
  expect(wasmRequests.size, "the reloaded page loads its wasm").toBeGreaterThan(0);
  for (const [id, url] of wasmRequests) {
    expect(fromCache.has(id), `${url} came from the cache`).toBe(true);
  }
});
