/**
 * The wire contract through the stock npm socket.io-client alone: no browser is started
 * (`npx playwright test protocol` runs just this file).
 */
import { test, testWith, expect } from "./server";

/** A server that announces a dropped connection as gone after 200 ms, not 10 s. */
const quickGrace = testWith({ args: ["--departure-grace-ms", "200"] });
import {
  clientId,
  closeAll,
  collect,
  connect,
  request,
  type Presence,
  type TypingNotice,
  type WireMessage,
} from "./stock";

test.afterEach(() => closeAll());

test("join: the reply, and the refusals", async ({ server }) => {
  const a = await connect(server.url);
  const refusals: [unknown, string][] = [
    [{ name: "   ", room: "general" }, "invalid_name"],
    [{ name: "x".repeat(33), room: "general" }, "invalid_name"],
    [{ name: "ann", room: "General" }, "invalid_room"],
    [{ name: "ann", room: "../etc" }, "invalid_room"],
    [{ name: "ann", room: "" }, "invalid_room"],
  ];
  for (const [payload, code] of refusals) {
    const reply = await request(a, "join", payload);
    expect(reply, JSON.stringify(payload)).toMatchObject({ ok: false, error: { code } });
    expect(typeof reply.error?.message).toBe("string");
  }
  const bad = await request(a, "join", { room: "general" });
  expect(bad.ok).toBe(false);

  const ok = await request(a, "join", { name: "  ann  ", room: "general" });
  expect(ok).toEqual({
    ok: true,
    room: "general",
    name: "ann",
    members: ["ann"],
    online: 1,
    history: [],
    truncated: false,
    session: expect.stringMatching(/^[0-9a-f]{32}$/),
  });

  const b = await connect(server.url, { transports: ["websocket"] });
  const taken = await request(b, "join", { name: "ANN", room: "general" });
  expect(taken).toMatchObject({ ok: false, error: { code: "name_taken" } });
  const ben = await request(b, "join", { name: "ben", room: "general" });
  expect(ben).toMatchObject({ ok: true, name: "ben" });
  expect([...(ben.members as string[])].sort()).toEqual(["ann", "ben"]);
});

test("messages: broadcast, history, idempotency, refusals", async ({ server }) => {
  const a = await connect(server.url);
  const b = await connect(server.url, { transports: ["polling"] });
  expect(await request(a, "join", { name: "ann", room: "general" })).toMatchObject({ ok: true });
  const atB = collect<WireMessage>(b, "message");

  // Not joined yet.
  const early = await request(b, "message", { room: "general", text: "hi", client_id: "b-1" });
  expect(early).toMatchObject({ ok: false, error: { code: "not_joined" } });
  expect(await request(b, "join", { name: "ben", room: "general" })).toMatchObject({ ok: true });

  const id1 = clientId("ann");
  const first = await request(a, "message", { room: "general", text: "  one  ", client_id: id1 });
  expect(first).toMatchObject({
    ok: true,
    message: { room: "general", author: "ann", text: "one", client_id: id1 },
  });
  const m1 = first.message as WireMessage;
  expect(Number.isInteger(m1.id)).toBe(true);
  expect(Math.abs(m1.ts - Date.now())).toBeLessThan(60_000);

  // The same client_id again is the same message, delivered once.
  const again = await request(a, "message", { room: "general", text: "one", client_id: id1 });
  expect(again).toMatchObject({ ok: true, message: { id: m1.id } });

  const second = await request(a, "message", {
    room: "general",
    text: "two",
    client_id: clientId("ann"),
  });
  expect((second.message as WireMessage).id).toBeGreaterThan(m1.id);

  await expect.poll(() => atB.map((m) => m.text)).toEqual(["one", "two"]);
  expect(atB[0]).toEqual(m1);

  for (const [text, code] of [
    ["", "empty"],
    [" \n\t ", "empty"],
    ["x".repeat(4001), "too_long"],
  ] as const) {
    const reply = await request(a, "message", { room: "general", text, client_id: clientId() });
    expect(reply, `text of ${text.length} chars`).toMatchObject({ ok: false, error: { code } });
  }
  const atMax = await request(a, "message", {
    room: "general",
    text: "é".repeat(4000),
    client_id: clientId(),
  });
  expect(atMax.ok).toBe(true);
  const otherRoom = await request(a, "message", {
    room: "random",
    text: "hi",
    client_id: clientId(),
  });
  expect(otherRoom).toMatchObject({ ok: false, error: { code: "not_joined" } });

  // A newcomer gets the history, oldest first.
  const c = await connect(server.url);
  const joined = await request(c, "join", { name: "cat", room: "general" });
  const history = joined.history as WireMessage[];
  expect(history.map((m) => m.text)).toEqual(["one", "two", "é".repeat(4000)]);
  expect(history[0]).toEqual(m1);
});

quickGrace("presence and typing notices", async ({ server }) => {
  const a = await connect(server.url);
  expect(await request(a, "join", { name: "ann", room: "general" })).toMatchObject({ ok: true });
  const joined = collect<Presence>(a, "joined");
  const left = collect<Presence>(a, "left");
  const typing = collect<TypingNotice>(a, "typing");

  const b = await connect(server.url);
  expect(await request(b, "join", { name: "ben", room: "general" })).toMatchObject({ ok: true });
  await expect.poll(() => joined.map((p) => p.name)).toContain("ben");
  expect(joined.find((p) => p.name === "ben")).toMatchObject({ room: "general", name: "ben" });

  b.emit("typing", { room: "general", typing: true });
  await expect
    .poll(() => typing.find((t) => t.name === "ben" && t.typing))
    .toEqual({ room: "general", name: "ben", typing: true });
  b.emit("typing", { room: "general", typing: false });
  await expect
    .poll(() => typing.find((t) => t.name === "ben" && !t.typing))
    .toEqual({ room: "general", name: "ben", typing: false });

  // An explicit leave.
  expect(await request(b, "leave", { room: "general" })).toEqual({ ok: true });
  await expect.poll(() => left.map((p) => p.name)).toEqual(["ben"]);
  const afterLeave = await request(b, "message", {
    room: "general",
    text: "still here?",
    client_id: clientId(),
  });
  expect(afterLeave).toMatchObject({ ok: false, error: { code: "not_joined" } });

  // A disconnect is a leave too, once the departure grace is over; the name stays held
  // for its session token.
  const c = await connect(server.url, { transports: ["polling"] });
  const catJoined = await request(c, "join", { name: "cat", room: "general" });
  expect(catJoined).toMatchObject({ ok: true });
  await expect.poll(() => joined.map((p) => p.name)).toContain("cat");
  c.disconnect();
  await expect.poll(() => left.map((p) => p.name)).toEqual(["ben", "cat"]);
  const d = await connect(server.url);
  expect(await request(d, "join", { name: "cat", room: "general" })).toMatchObject({
    ok: false,
    error: { code: "name_taken" },
  });
  expect(
    await request(d, "join", { name: "cat", room: "general", session: catJoined.session }),
  ).toMatchObject({ ok: true, name: "cat" });
});

test("rules: one name per socket, names per room, senders, authors, shapes", async ({
  server,
}) => {
  const a = await connect(server.url);
  const b = await connect(server.url);
  const atA = collect<WireMessage>(a, "message");
  const atB = collect<WireMessage>(b, "message");
  const typingAtB = collect<TypingNotice>(b, "typing");
  const annJoined = await request(a, "join", { name: "ann", room: "general" });
  expect(annJoined).toMatchObject({ ok: true });

  // One socket keeps one name; a second room under the same name is fine.
  const second = await request(a, "join", { name: "other", room: "random" });
  expect(second).toMatchObject({ ok: false, error: { code: "invalid_name" } });
  expect(await request(a, "join", { name: "ann", room: "random" })).toMatchObject({
    ok: true,
    room: "random",
  });
  // Names are server-wide: another socket gets the name only with ann's session token.
  const c = await connect(server.url);
  expect(await request(c, "join", { name: "Ann", room: "elsewhere" })).toMatchObject({
    ok: false,
    error: { code: "name_taken" },
  });
  expect(
    await request(c, "join", { name: "ann", room: "elsewhere", session: annJoined.session }),
  ).toMatchObject({ ok: true, session: annJoined.session });

  expect(await request(b, "join", { name: "ben", room: "general" })).toMatchObject({ ok: true });

  // Shapes.
  const shapes: unknown[] = [
    { room: "general", text: 5, client_id: clientId() },
    { room: "general", text: "hi" },
    { room: "general", text: "hi", client_id: "" },
    { room: "general", text: "hi", client_id: "x".repeat(65) },
    "just a string",
    ["an", "array"],
  ];
  for (const payload of shapes) {
    const reply = await request(a, "message", payload);
    expect(reply, JSON.stringify(payload)).toMatchObject({
      ok: false,
      error: { code: "bad_request" },
    });
    expect(reply.error!.message.length).toBeGreaterThan(0);
  }
  const noPayload = (await a.timeout(5_000).emitWithAck("message")) as { ok: boolean };
  expect(noPayload).toMatchObject({ ok: false, error: { code: "bad_request" } });

  // A client-supplied author, id or ts is ignored.
  const forged = await request(a, "message", {
    room: "general",
    text: "who wrote this?",
    client_id: clientId(),
    author: "mallory",
    id: 999_999,
    ts: 1,
  });
  expect(forged).toMatchObject({ ok: true, message: { author: "ann", text: "who wrote this?" } });
  const forgedMessage = forged.message as WireMessage;
  expect(forgedMessage.id).not.toBe(999_999);
  expect(forgedMessage.ts).not.toBe(1);

  // Posting ends the poster's typing indicator.
  a.emit("typing", { room: "general", typing: true });
  await expect
    .poll(() => typingAtB.filter((t) => t.name === "ann").at(-1))
    .toEqual({ room: "general", name: "ann", typing: true });
  expect(
    await request(a, "message", { room: "general", text: "done typing", client_id: clientId() }),
  ).toMatchObject({ ok: true });
  await expect
    .poll(() => typingAtB.filter((t) => t.name === "ann").at(-1))
    .toEqual({ room: "general", name: "ann", typing: false });

  // The sender gets the ack, not the broadcast; the others get the broadcast.
  await expect.poll(() => atB.map((m) => m.text)).toEqual(["who wrote this?", "done typing"]);
  expect(await request(b, "message", { room: "general", text: "ack", client_id: clientId() }))
    .toMatchObject({ ok: true });
  await expect.poll(() => atA.map((m) => m.text)).toEqual(["ack"]);
});

test("refused requests without an ack get an error event", async ({ server }) => {
  const a = await connect(server.url);
  const errors = collect<{ event: string; code: string; message: string }>(a, "error");
  a.emit("typing", { room: "general", typing: true });
  await expect.poll(() => errors.length).toBe(1);
  expect(errors[0]).toMatchObject({ event: "typing", code: "not_joined" });
  expect(errors[0].message.length).toBeGreaterThan(0);

  expect(await request(a, "join", { name: "ann", room: "general" })).toMatchObject({ ok: true });
  a.emit("message", { room: "general", text: "  ", client_id: clientId() });
  await expect.poll(() => errors.length).toBe(2);
  expect(errors[1]).toMatchObject({ event: "message", code: "empty" });

  // The socket is still connected and usable.
  expect(a.connected).toBe(true);
  expect(
    await request(a, "message", { room: "general", text: "still here", client_id: clientId() }),
  ).toMatchObject({ ok: true });
});

interface RoomInfo {
  name: string;
  online: number;
  last_id: number;
  last_ts: number | null;
}

test("history paging, the room list, and both after a server restart", async ({ server }) => {
  const a = await connect(server.url);
  const first = await request(a, "join", { name: "ann", room: "general" });
  expect(first).toMatchObject({ ok: true });
  const session = first.session as string;
  expect(await request(a, "join", { name: "ann", room: "quiet" })).toMatchObject({ ok: true });
  const sent: WireMessage[] = [];
  for (let i = 1; i <= 5; i++) {
    const reply = await request(a, "message", {
      room: "general",
      text: `durable ${i}`,
      client_id: `durable-${i}`,
    });
    expect(reply.ok).toBe(true);
    sent.push(reply.message as WireMessage);
  }
  const ids = sent.map((m) => m.id);
  expect([...ids].sort((x, y) => x - y)).toEqual(ids);
  expect(new Set(ids).size).toBe(5);

  // Scrolling back: newest page first, each page oldest first.
  const newest = await request(a, "history", {
    room: "general",
    before: Number.MAX_SAFE_INTEGER,
    limit: 2,
  });
  expect(newest).toMatchObject({ ok: true, more: true });
  expect((newest.messages as WireMessage[]).map((m) => m.text)).toEqual(["durable 4", "durable 5"]);
  const older = await request(a, "history", { room: "general", before: ids[3], limit: 100 });
  expect(older).toMatchObject({ ok: true, more: false });
  expect(older.messages).toEqual(sent.slice(0, 3));
  const byDefault = await request(a, "history", { room: "general", before: ids[4] });
  expect((byDefault.messages as WireMessage[]).length).toBe(4);
  for (const bad of [
    { room: "general", before: 10, limit: 0 },
    { room: "general", before: 10, limit: 101 },
    { room: "general", before: -1 },
    { room: "general" },
  ]) {
    const reply = await request(a, "history", bad);
    expect(reply, JSON.stringify(bad)).toMatchObject({ ok: false, error: { code: "bad_request" } });
  }
  const notJoined = await request(a, "history", { room: "elsewhere", before: 10 });
  expect(notJoined).toMatchObject({ ok: false, error: { code: "not_joined" } });

  // The room list: rooms with messages by their newest one, then rooms with people in
  // them and no message yet.
  const outsider = await connect(server.url, { transports: ["polling"] });
  const rooms = await request(outsider, "rooms", {});
  expect(rooms.ok).toBe(true);
  const list = rooms.rooms as RoomInfo[];
  expect(list.map((r) => r.name)).toEqual(["general", "quiet"]);
  expect(list.find((r) => r.name === "general")).toEqual({
    name: "general",
    online: 1,
    last_id: ids[4],
    last_ts: sent[4].ts,
  });
  expect(list.find((r) => r.name === "quiet")).toEqual({
    name: "quiet",
    online: 1,
    last_id: 0,
    last_ts: null,
  });

  // Everything above survives a restart of the server. (The clients stay connected: the
  // server closes them. shutdown.spec.ts checks that a stop is prompt in any case.)
  const stopped = await server.stop();
  expect(stopped.forced, "the server exits on SIGTERM within 10 s").toBe(false);
  await server.restart();

  // Back with her session token, as PROTOCOL.md's Reconnecting says: resends are
  // recognised per session.
  const b = await connect(server.url);
  const since = await request(b, "join", { name: "ann", room: "general", since: ids[1], session });
  expect(since).toMatchObject({ ok: true, truncated: false });
  expect(since.history).toEqual(sent.slice(2));
  const fromStart = await request(b, "join", { name: "ann", room: "general", since: 0 });
  expect(fromStart.history).toEqual(sent);
  const plain = await request(b, "join", { name: "ann", room: "general" });
  expect(plain.history).toEqual(sent);

  // A resend from before the restart is still recognised.
  const resend = await request(b, "message", {
    room: "general",
    text: "durable 3",
    client_id: "durable-3",
  });
  expect(resend).toMatchObject({ ok: true, message: sent[2] });
  const next = await request(b, "message", {
    room: "general",
    text: "after the restart",
    client_id: clientId(),
  });
  expect((next.message as WireMessage).id).toBeGreaterThan(ids[4]);

  // A room without a message is kept only while someone is in it.
  const after = (await request(b, "rooms", {})).rooms as RoomInfo[];
  expect(after.find((r) => r.name === "quiet")).toBeUndefined();
  expect(after.find((r) => r.name === "general")).toMatchObject({ online: 1 });
});
