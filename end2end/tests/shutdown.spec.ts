/**
 * SIGTERM stops the server promptly, whatever its clients are doing: a graceful stop
 * that waits on a client can outlast a supervisor's patience (Docker's default is 10 s)
 * and end in SIGKILL.
 */
import * as http from "node:http";
import { test, expect, openAndJoin, send, sleep } from "./server";
import { closeAll, connect, request } from "./stock";

const PROMPT_MS = 3_000;

test.afterEach(() => closeAll());

test("SIGTERM with browsers and stock clients connected", async ({ openUser, server }) => {
  const alice = await openAndJoin(openUser, "alice");
  await send(alice.page, "about to stop");
  for (const transports of [undefined, ["polling"], ["websocket"]] as const) {
    const socket = await connect(server.url, transports ? { transports: [...transports] } : {});
    expect(
      await request(socket, "join", { name: `node-${transports?.[0] ?? "default"}`, room: "general" }),
    ).toMatchObject({ ok: true });
  }
  await sleep(300);
  const stopped = await server.stop();
  expect(stopped.forced).toBe(false);
  expect(stopped.ms, "milliseconds from SIGTERM to exit").toBeLessThan(PROMPT_MS);
  expect(stopped.code).toBe(0);
});

test("SIGTERM with a long-polling session that has no Socket.IO connection", async ({
  server,
}) => {
  // An Engine.IO session (the handshake of every polling client), with its long-poll
  // GET waiting, and no namespace connected: a client mid-handshake, or one that has just
  // disconnected its socket.
  const base = `${server.url}/socket.io/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text();
  expect(open.startsWith("0{"), `open packet: ${open}`).toBe(true);
  const sid = (JSON.parse(open.slice(1)) as { sid: string }).sid;
  const polls: string[] = [];
  const poll = () =>
    http
      .get(`${base}&sid=${sid}`, (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => {
          polls.push(`${res.statusCode} ${JSON.stringify(body)}`);
          if (res.statusCode === 200 && !/(^|\x1e)1/.test(body)) poll();
        });
      })
      .on("error", (err) => polls.push(`error ${err.message}`));
  poll();
  await sleep(500);

  const stopped = await server.stop();
  expect(stopped.forced, `long-polls answered: ${JSON.stringify(polls)}`).toBe(false);
  expect(stopped.ms, "milliseconds from SIGTERM to exit").toBeLessThan(PROMPT_MS);
});
