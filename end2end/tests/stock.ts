/** The stock npm `socket.io-client`, as any third-party client would use it. */
import { io, type Socket, type ManagerOptions, type SocketOptions } from "socket.io-client";

export type { Socket };

export const ACK_TIMEOUT_MS = 5_000;

/** Any ack reply: `{ ok: true, ...body }` or `{ ok: false, error: { code, message } }`. */
export interface Reply {
  ok: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}

export interface WireMessage {
  id: number;
  room: string;
  author: string;
  text: string;
  ts: number;
  client_id: string;
}

export interface Presence {
  room: string;
  name: string;
  ts: number;
}

export interface TypingNotice {
  room: string;
  name: string;
  typing: boolean;
}

const opened = new Set<Socket>();

/** Connects and waits for the Socket.IO `connect` (fails on `connect_error`). */
export async function connect(
  url: string,
  opts: Partial<ManagerOptions & SocketOptions> = {},
): Promise<Socket> {
  // withCredentials: keep cookies (engine.io-client's jar under Node), as a load balancer
  // that keeps sessions on their node by a cookie needs (BANTER_CLUSTER, cluster.ts).
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    timeout: 5_000,
    withCredentials: true,
    ...opts,
  });
  opened.add(socket);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no connect within 10 s")), 10_000);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(`connect_error: ${err.message}`));
    });
  });
  return socket;
}

export function closeAll(): void {
  for (const s of opened) s.disconnect();
  opened.clear();
}

/** `emitWithAck` with a deadline, so a missing ack fails instead of hanging. */
export async function request(socket: Socket, event: string, payload: unknown): Promise<Reply> {
  return (await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload)) as Reply;
}

/** Records every payload of `event` that `socket` receives. */
export function collect<T>(socket: Socket, event: string): T[] {
  const seen: T[] = [];
  socket.on(event, (payload: T) => seen.push(payload));
  return seen;
}

/** The transport in use (`polling` or `websocket`). */
export function transportName(socket: Socket): string | undefined {
  return socket.io.engine?.transport?.name;
}

let counter = 0;
export function clientId(prefix = "node"): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now()}-${counter}`;
}

/** Joins `room` as `name` with the stock client and returns a function that sends one
 * message there and waits for its ack (for tests that need history or traffic). */
export async function speaker(
  url: string,
  name: string,
  room: string,
): Promise<(text: string) => Promise<Reply>> {
  const socket = await connect(url, { transports: ["websocket"] });
  const joined = await request(socket, "join", { name, room });
  if (joined.ok !== true) throw new Error(`${name} could not join #${room}: ${JSON.stringify(joined)}`);
  return (text) => request(socket, "message", { room, text, client_id: clientId(name) });
}
