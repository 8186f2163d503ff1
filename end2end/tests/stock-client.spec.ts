import { testWith, expect, messageItem, onlineEntry, openAndJoin, send } from "./server";

/** Departures announced 200 ms after a connection drops (10 s by default). */
const test = testWith({ args: ["--departure-grace-ms", "200"] });
import {
  clientId,
  closeAll,
  collect,
  connect,
  request,
  transportName,
  type Socket,
  type WireMessage,
} from "./stock";

test.afterEach(() => closeAll());

test("the stock socket.io-client chats with a browser user over every transport", async ({
  openUser,
  server,
}) => {
  const clients: { name: string; socket: Socket; transport: string }[] = [
    // Default options: long-polling first, then the upgrade to WebSocket.
    { name: "node-default", socket: await connect(server.url), transport: "websocket" },
    {
      name: "node-polling",
      socket: await connect(server.url, { transports: ["polling"] }),
      transport: "polling",
    },
    {
      name: "node-websocket",
      socket: await connect(server.url, { transports: ["websocket"] }),
      transport: "websocket",
    },
  ];
  const received = new Map<string, WireMessage[]>();
  for (const c of clients) received.set(c.name, collect<WireMessage>(c.socket, "message"));

  for (const c of clients) {
    const reply = await request(c.socket, "join", { name: c.name, room: "general" });
    expect(reply, `join reply for ${c.name}`).toMatchObject({
      ok: true,
      room: "general",
      name: c.name,
    });
    expect(reply.members).toEqual(expect.arrayContaining([c.name]));
    expect(Array.isArray(reply.history)).toBe(true);
  }
  // The default client upgraded; the others kept what they were given.
  for (const c of clients) {
    await expect
      .poll(() => transportName(c.socket), { message: `${c.name}'s transport` })
      .toBe(c.transport);
  }

  const alice = await openAndJoin(openUser, "alice");
  for (const c of clients) await expect(onlineEntry(alice.page, c.name)).toBeVisible();

  // Each stock client → alice.
  for (const c of clients) {
    const text = `hello alice from ${c.name}`;
    const id = clientId(c.name);
    const reply = await request(c.socket, "message", { room: "general", text, client_id: id });
    expect(reply, `message reply for ${c.name}`).toMatchObject({
      ok: true,
      message: { room: "general", author: c.name, text, client_id: id },
    });
    const item = messageItem(alice.page, text);
    await expect(item).toHaveCount(1);
    await expect(item.locator(".author")).toHaveText(c.name);
    await expect(item).toHaveAttribute("data-status", "delivered");
  }

  // alice → every stock client.
  await send(alice.page, "hi stock clients");
  for (const c of clients) {
    await expect
      .poll(() => received.get(c.name)!.filter((m) => m.text === "hi stock clients").length, {
        message: `${c.name} receives alice's message`,
      })
      .toBe(1);
    const m = received.get(c.name)!.find((m) => m.text === "hi stock clients")!;
    expect(m).toMatchObject({ room: "general", author: "alice", text: "hi stock clients" });
    expect(typeof m.id).toBe("number");
    expect(typeof m.ts).toBe("number");
    expect(typeof m.client_id).toBe("string");
  }

  // A refusal comes back on the ack.
  const empty = await request(clients[0].socket, "message", {
    room: "general",
    text: "   ",
    client_id: clientId(),
  });
  expect(empty).toMatchObject({ ok: false, error: { code: "empty" } });
  expect(typeof empty.error?.message).toBe("string");
  await expect(messageItem(alice.page, "")).toHaveCount(0);

  // A stock client that disconnects leaves the browser's Online list.
  clients[1].socket.disconnect();
  await expect(onlineEntry(alice.page, "node-polling")).toHaveCount(0);
});
