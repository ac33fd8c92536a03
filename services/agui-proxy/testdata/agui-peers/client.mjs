// A run through the official AG-UI client (@ag-ui/client's HttpAgent), for
// agui-proxy's conformance tests (internal/app/official_test.go). The
// client parses the stream (SSE, or the binary proto encoding when the
// response's Content-Type says so), validates every event and its order
// (first RUN_STARTED, nothing after RUN_FINISHED) and builds the messages;
// this script only watches.
//
// Its one argument is a JSON object:
//   url        the run's URL (the proxy's /sessions/{id}/agui/run)
//   runId, threadId, text, headers, forwardedProps   the run's input
//   proto      ask for application/vnd.ag-ui.event+proto instead of SSE
//   abort      {how, after}: leave after `after` TEXT_MESSAGE_CONTENT events,
//              by "abortRun" (HttpAgent.abortRun) or "signal" (an
//              AbortController passed to runAgent). Not by unsubscribing
//              from HttpAgent.run's Observable: in @ag-ui/client 1.0.0 that
//              leaves the HTTP request running.
// It reports JSON lines on stdout: {"msg":"event"} per event the client
// delivered, {"msg":"read","bytes"} with the bytes received so far after
// each chunk, {"msg":"ping","count"} when the raw stream carried another
// ": ping" comment, {"msg":"aborted"}, and last {"msg":"result"} with the
// events, the new messages, the raw bytes received (base64), the error the
// client surfaced, if any, and the RUN_ERROR event its onRunErrorEvent
// subscriber got, if any (@ag-ui/client 1.0.0 resolves runAgent after a
// RUN_ERROR; a UI learns of the failed run from that subscriber). It then
// stays alive, its connection state untouched, until stdin closes.
import { HttpAgent } from "@ag-ui/client";
import { AGUI_MEDIA_TYPE } from "@ag-ui/encoder";

const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const opts = JSON.parse(process.argv[2]);

// The client's Accept is fixed to SSE in HttpAgent.requestInit; a client
// that wants the binary encoding overrides it.
class ProtoAgent extends HttpAgent {
  requestInit(input) {
    const init = super.requestInit(input);
    return { ...init, headers: { ...init.headers, Accept: AGUI_MEDIA_TYPE } };
  }
}

// watchedFetch is fetch with the response body passed through a
// TransformStream that records the raw bytes: same status, same headers,
// same bytes, and a cancel of the body still reaches the connection.
const raw = [];
let pings = 0;
let received = 0;
let contentType = "";
let status = 0;
const PING = ": ping\n\n";
async function watchedFetch(url, init) {
  const res = await fetch(url, init);
  status = res.status;
  contentType = res.headers.get("content-type") ?? "";
  if (!res.ok || !res.body) return res;
  // The last bytes of the previous chunk, shorter than a comment: every
  // comment found in tail + chunk is a new one.
  let tail = "";
  const watch = new TransformStream({
    transform(chunk, controller) {
      raw.push(Buffer.from(chunk));
      received += chunk.length;
      report({ msg: "read", bytes: received });
      // latin1: one character per byte, whatever a chunk cut.
      const text = tail + Buffer.from(chunk).toString("latin1");
      const n = text.split(PING).length - 1;
      tail = text.slice(-(PING.length - 1));
      if (n > 0) {
        pings += n;
        report({ msg: "ping", count: pings });
      }
      controller.enqueue(chunk);
    },
  });
  return new Response(res.body.pipeThrough(watch), { status: res.status, statusText: res.statusText, headers: res.headers });
}

const Agent = opts.proto ? ProtoAgent : HttpAgent;
const agent = new Agent({
  url: opts.url,
  headers: opts.headers ?? {},
  threadId: opts.threadId,
  fetch: watchedFetch,
  initialMessages: [{ id: "m1", role: "user", content: opts.text ?? "hello" }],
});

const events = [];
let contents = 0;
const abortHow = opts.abort?.how;
const abortAfter = opts.abort?.after ?? Infinity;
const controller = new AbortController();
let aborted = false;

function leave() {
  if (aborted) return;
  aborted = true;
  if (abortHow === "abortRun") agent.abortRun();
  else controller.abort();
  report({ msg: "aborted", how: abortHow });
}

function onEvent(event) {
  events.push(event);
  report({ msg: "event", type: event.type });
  if (event.type === "TEXT_MESSAGE_CONTENT" && ++contents >= abortAfter) leave();
}

function errorOf(err) {
  if (!err) return null;
  return { name: err.name ?? "", message: err.message ?? String(err), status: err.status ?? 0, payload: err.payload ?? null };
}

async function main() {
  const params = { runId: opts.runId, forwardedProps: opts.forwardedProps ?? {} };
  let error = null;
  let newMessages = [];
  let failed = null;
  let runError = null;
  if (abortHow === "signal") params.abortController = controller;
  try {
    const res = await agent.runAgent(params, {
      onEvent: ({ event }) => { onEvent(event); },
      onRunFailed: ({ error: err }) => { failed = err; },
      onRunErrorEvent: ({ event }) => { runError = event; },
    });
    newMessages = res.newMessages;
  } catch (err) {
    error = err;
  }
  report({
    msg: "result", status, contentType, pings, events, newMessages,
    error: errorOf(error), runFailed: errorOf(failed), runError,
    raw: Buffer.concat(raw).toString("base64"),
  });
}

main().catch((err) => report({ msg: "result", error: errorOf(err), events, status, contentType, pings }));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
