// The Node.js reference publisher of bench/peers.py: @socket.io/redis-emitter, Socket.IO's documented way to
// emit from a process without a server. Reads commands on stdin (as bench/publisher.py):
//   rate R SECONDS FILE     R messages/s for SECONDS, round robin over the socket ids in FILE
//   blast N K FILE          N messages as fast as K concurrent loops can
//   quit
// and prints one JSON line per command. Environment: REDIS_URL.
"use strict";
const fs = require("node:fs");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");
const { now, commands, messagePayload, paced, blast } = require("./common");

async function main() {
  const redis = createClient({ url: process.env.REDIS_URL });
  await redis.connect();
  const emitter = new Emitter(redis);
  console.log("ready");
  commands(
    async (words) => {
      const targets = fs
        .readFileSync(words[3], "utf8")
        .split("\n")
        .filter(Boolean)
        .map((line) => line.split(" ")[1]);
      const send = async (i) => {
        emitter.to(targets[i % targets.length]).emit("new_message", messagePayload(`m${i}`, now()));
      };
      const result =
        words[0] === "rate"
          ? await paced(Number(words[1]), Number(words[2]), send)
          : await blast(Number(words[1]), Number(words[2]), send);
      console.log(JSON.stringify(result));
    },
    async () => {
      await redis.quit();
      process.exit(0);
    },
  );
}

main();
