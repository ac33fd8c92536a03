// An AG-UI runner built on the official encoder (@ag-ui/encoder), for
// agui-proxy's conformance tests (internal/app/official_test.go). Like a
// session's runner it serves runs at POST / and answers in the encoding the
// request's Accept negotiates with EventEncoder: SSE, or the binary
// application/vnd.ag-ui.event+proto (4-byte big-endian length, then the
// protobuf message).
//
// It talks to the test in JSON lines: on stdout it reports what it saw
// ({"msg":"listening"}, "run", "gap" (with the bytes written so far),
// "done", "closed"); on stdin the test
// releases a run waiting at a gap ("go <runId>"). Closing stdin stops it.
// The run's RunAgentInput.forwardedProps choose the script:
//   scenario "stream": every event at once, in writes that coalesce
//     frames and split one inside a multi-byte UTF-8 character (SSE) or
//     inside the length prefix (proto);
//   scenario "gaps": the same, stopping after RUN_STARTED, inside the split
//     frame, after the delta that ends a paragraph and before RUN_FINISHED,
//     each time until the test says go;
//   scenario "hang": RUN_STARTED, a step and a message start, `words` deltas, then
//     waits for a "go" that never comes (the client leaves first, or the
//     proxy ends the stream);
//   scenario "midframe": as "hang", plus the first half of one more delta
//     frame: the runner falls silent inside a frame;
//   scenario "finished": the whole run, RUN_FINISHED included, then the
//     response stays open, as "hang" waits;
//   scenario "fail": 500 with a JSON body of its own.
import { createServer } from "node:http";
import { createInterface } from "node:readline";
import { EventType } from "@ag-ui/core";
import { RunAgentInputSchema } from "@ag-ui/core/schemas";
import { EventEncoder } from "@ag-ui/encoder";

const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Runs waiting at a gap: runId -> resolve.
const waiting = new Map();
createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, runId] = line.trim().split(/\s+/);
  const release = waiting.get(runId);
  if (cmd === "go" && release) {
    waiting.delete(runId);
    release();
  }
});
process.stdin.on("end", () => process.exit(0));

// The text of the run's message: multi-byte characters on purpose, so a
// frame split inside one must reach the client's decoder intact, and a
// paragraph break, so a binary frame ends in "\n\n" (the delta is the last
// field of its protobuf message), which is no SSE event boundary.
const WORDS = ["Hello", " wörld", " 日本語", " 🚀\n\n", "Through", " the", " proxy"];

function script(input, words) {
  const { threadId, runId } = input;
  const messageId = `msg-${runId}`;
  const toolCallId = `tool-${runId}`;
  const deltas = Array.from({ length: words }, (_, i) => WORDS[i % WORDS.length]);
  return [
    { type: EventType.RUN_STARTED, threadId, runId },
    { type: EventType.STEP_STARTED, stepName: "answer" },
    { type: EventType.TEXT_MESSAGE_START, messageId, role: "assistant" },
    ...deltas.map((delta) => ({ type: EventType.TEXT_MESSAGE_CONTENT, messageId, delta })),
    { type: EventType.TEXT_MESSAGE_END, messageId },
    { type: EventType.TOOL_CALL_START, toolCallId, toolCallName: "lookup", parentMessageId: messageId },
    { type: EventType.TOOL_CALL_ARGS, toolCallId, delta: '{"query":' },
    { type: EventType.TOOL_CALL_ARGS, toolCallId, delta: '"agui"}' },
    { type: EventType.TOOL_CALL_END, toolCallId },
    { type: EventType.STATE_SNAPSHOT, snapshot: { answered: true, words } },
    { type: EventType.STEP_FINISHED, stepName: "answer" },
    { type: EventType.RUN_FINISHED, threadId, runId },
  ];
}

// splitAt is where a frame is cut in two writes: inside the first
// multi-byte character of an SSE frame, or inside a proto frame's length
// prefix.
function splitAt(bytes, proto) {
  if (proto) return 2;
  const i = bytes.findIndex((b) => b >= 0x80);
  return i >= 0 ? i + 1 : bytes.length >> 1;
}

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

async function serveRun(req, res) {
  let input;
  try {
    input = JSON.parse(await readBody(req));
  } catch (err) {
    res.writeHead(400, { "Content-Type": "application/json" }).end(JSON.stringify({ detail: String(err) }));
    return;
  }
  const parsed = RunAgentInputSchema.safeParse(input);
  const props = input.forwardedProps ?? {};
  const runId = input.runId;
  report({
    msg: "run", runId, scenario: props.scenario, accept: req.headers.accept ?? "",
    requestContentType: req.headers["content-type"] ?? "", inputValid: parsed.success,
    issues: parsed.success ? "" : parsed.error.message,
    authorization: req.headers.authorization ?? "",
  });
  if (!parsed.success) {
    res.writeHead(422, { "Content-Type": "application/json" }).end(JSON.stringify({ detail: "invalid RunAgentInput" }));
    return;
  }
  if (props.scenario === "fail") {
    res.writeHead(500, { "Content-Type": "application/json" }).end(JSON.stringify({ detail: "runner failed on purpose" }));
    return;
  }

  const encoder = new EventEncoder({ accept: req.headers.accept });
  const contentType = encoder.getContentType();
  const proto = contentType !== "text/event-stream";
  let closed = false;
  res.on("close", () => {
    closed = true;
    const release = waiting.get(runId);
    waiting.delete(runId);
    if (!res.writableFinished) {
      // The request ended before the run did: the client left and the
      // proxy cancelled its call to this runner.
      report({ msg: "closed", runId });
    }
    release?.();
  });
  const written = [];
  const write = (bytes) => {
    if (closed) return;
    written.push(Buffer.from(bytes));
    res.write(bytes);
  };
  let gaps = 0;
  const gap = (mid) =>
    new Promise((resolve) => {
      if (closed) return resolve();
      waiting.set(runId, resolve);
      const raw = Buffer.concat(written);
      report({ msg: "gap", runId, index: gaps++, mid, bytes: raw.length, raw: raw.toString("base64") });
    });

  res.writeHead(200, { "Content-Type": contentType, "Cache-Control": "no-cache" });
  res.flushHeaders();

  const words = props.words ?? WORDS.length;
  if (props.scenario === "hang" || props.scenario === "midframe") {
    const events = script(input, words).slice(0, 3 + words);
    for (const ev of events) write(encoder.encodeBinary(ev));
    const mid = props.scenario === "midframe";
    if (mid) {
      const next = encoder.encodeBinary({ type: EventType.TEXT_MESSAGE_CONTENT, messageId: `msg-${runId}`, delta: " cut" });
      write(next.subarray(0, next.length >> 1));
    }
    await gap(mid); // released only by the request's end
    res.end();
    return;
  }
  if (props.scenario === "finished") {
    for (const ev of script(input, words)) write(encoder.encodeBinary(ev));
    await gap(false); // released only by the request's end
    res.end();
    return;
  }

  const paused = props.scenario === "gaps";
  const frames = script(input, words).map((ev) => ({ type: ev.type, delta: ev.delta ?? "", bytes: encoder.encodeBinary(ev) }));
  const types = frames.map((f) => f.type);
  let splitDone = false;
  for (let i = 0; i < frames.length && !closed; i++) {
    const { type, bytes } = frames[i];
    if (i === 1) {
      // STEP_STARTED and TEXT_MESSAGE_START in one write.
      write(Buffer.concat([bytes, frames[i + 1].bytes]));
      i++;
    } else if (!splitDone && type === EventType.TEXT_MESSAGE_CONTENT && (proto || bytes.some((b) => b >= 0x80))) {
      splitDone = true;
      const at = splitAt(bytes, proto);
      write(bytes.subarray(0, at));
      if (paused) await gap(true); // silence inside a frame
      write(bytes.subarray(at));
    } else {
      write(bytes);
    }
    // Silences between events: after RUN_STARTED, after the paragraph
    // break, and before RUN_FINISHED.
    const next = frames[i + 1]?.type;
    const paragraph = type === EventType.TEXT_MESSAGE_CONTENT && frames[i].delta.endsWith("\n\n");
    if (paused && (type === EventType.RUN_STARTED || paragraph || next === EventType.RUN_FINISHED)) {
      await gap(false);
    }
  }
  if (closed) return;
  res.end(() => report({ msg: "done", runId, contentType, types, raw: Buffer.concat(written).toString("base64") }));
}

const server = createServer((req, res) => {
  if (req.method === "POST" && req.url === "/") {
    serveRun(req, res).catch((err) => {
      report({ msg: "error", error: String(err?.stack ?? err) });
      res.destroy();
    });
    return;
  }
  res.writeHead(404, { "Content-Type": "application/json" }).end(JSON.stringify({ detail: "not found" }));
});
server.listen(0, "127.0.0.1", () => {
  const { address, port } = server.address();
  report({ msg: "listening", addr: `${address}:${port}` });
});
