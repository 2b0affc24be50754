// The Node.js Socket.IO reference replica of bench/peers.py: socket.io 4 with @socket.io/redis-adapter,
// served like a Switchboard replica (Socket.IO at /chat/ws/socket.io, websocket only).
// On connect it emits `session` {sessionId: socket.id}; `POST /send/:sid` with a JSON message payload
// emits it as `new_message` to that socket (through the adapter, so it may live on another replica).
// Environment: PORT, REDIS_URL.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const server = http.createServer((req, res) => {
    const match = req.method === "POST" && /^\/send\/([^/]+)$/.exec(req.url);
    if (!match) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const payload = JSON.parse(Buffer.concat(chunks).toString());
      io.to(decodeURIComponent(match[1])).emit("new_message", payload);
      res.writeHead(200, { "content-type": "application/json" }).end('{"sent":true}');
    });
  });
  const io = new Server(server, {
    path: "/chat/ws/socket.io",
    transports: ["websocket"],
    adapter: createAdapter(pub, sub),
  });
  io.on("connection", (socket) => socket.emit("session", { sessionId: socket.id }));
  server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("Uvicorn running on (node) ready"));
}

main();
