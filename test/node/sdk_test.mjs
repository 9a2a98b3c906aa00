// The client suite: the JavaScript clients people use today, pinned exactly
// in package.json (openai@7, LangChain JS, the Vercel AI SDK), against two
// Tollgate stacks this file starts on free ports and tears down at the end:
//
//   dev   `tollgate dev` on the built-in llama engine (stories260K), --no-prover;
//   mock  `tollgate gateway` + `tollgate worker --engine openai` in front of
//         `tollgate mock-upstream` (internal/upstreamtest: vLLM-like, tool calls).
//
// A stack starts only when a selected group needs it; the logs of every
// started process are printed when anything failed. Every process listens
// on port 0 and the suite reads the address it prints.
//
// Usage: node --test-reporter=spec sdk_test.mjs [--only=GROUP,...] [--todo=FEATURE,...] [path/to/tollgate]
//   binary: the argument, else $TOLLGATE_BIN, else ../../bin/tollgate
//   model dir: $TOLLGATE_MODEL_DIR, else $TOLLGATE_SHARED/models/stories260K,
//              else ../../../shared/models/stories260K
//   --only: groups whose name contains any of the words (e.g. --only=tools,
//           --only=langchain, --only=openai-dev); also $TOLLGATE_NODE_ONLY.
//   $TOLLGATE_NODE_UPSTREAM (an OpenAI base URL, e.g. a vLLM's http://host:8000/v1)
//           puts the mock stack's worker in front of that server instead of
//           mock-upstream; $TOLLGATE_NODE_UPSTREAM_MODEL names its model
//           (default mock-llm). It must also serve embeddings for that model.
//   --todo: features not yet merged (tools, json-schema, grammar, responses,
//           mock; see FEATURES): the tests that need one run as todo and
//           cannot fail the suite; also $TOLLGATE_NODE_TODO.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { ChatOpenAI, OpenAIEmbeddings } from "@langchain/openai";
import { tool as lcTool } from "@langchain/core/tools";
import { HumanMessage } from "@langchain/core/messages";
import { embed, embedMany, generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { z } from "zod";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const only = (args.find((a) => a.startsWith("--only="))?.slice(7) ?? process.env.TOLLGATE_NODE_ONLY ?? "")
  .split(",").map((s) => s.trim()).filter(Boolean);
// The features tests wait on, for --todo.
const FEATURES = {
  tools: "tools, tool_choice and tool messages through gateway and openai engine",
  "json-schema": "response_format json_schema through gateway and openai engine",
  grammar: "the built-in llama engine's grammar-constrained json_schema output",
  responses: "the Responses API: /v1/responses create, stream, store, retrieve, delete",
  mock: "internal/upstreamtest emitting tool calls and schema-valid JSON content",
  "n-choices": "n > 1 through gateway and openai engine passing the completion-record check",
  "logprob-bytes": "logprobs bytes as OpenAI and vLLM send them: an array of UTF-8 byte values, not base64",
};
const todo = (args.find((a) => a.startsWith("--todo="))?.slice(7) ?? process.env.TOLLGATE_NODE_TODO ?? "")
  .split(",").map((s) => s.trim()).filter(Boolean);
for (const f of todo) if (!FEATURES[f]) throw new Error(`--todo: unknown feature ${f} (have ${Object.keys(FEATURES)})`);
const bin = resolve(args.find((a) => !a.startsWith("--")) ?? process.env.TOLLGATE_BIN ?? join(here, "../../bin/tollgate"));
if (!existsSync(bin)) throw new Error(`no tollgate binary at ${bin}: build it (make build) or pass its path`);
const modelDir = process.env.TOLLGATE_MODEL_DIR ??
  join(process.env.TOLLGATE_SHARED ?? join(here, "../../../shared"), "models", "stories260K");

const KEY = "sk-node-client-test";
const PROVIDER_TOKEN = "pt-node-client-test-0123456789";
const DEV_MODEL = "stories260K";
const MOCK_MODEL = process.env.TOLLGATE_NODE_UPSTREAM_MODEL ?? "mock-llm";
const TEST_TIMEOUT = 60_000;

// ---------------------------------------------------------------- processes

// grab is the first group of re in p's output: the address a process
// listening on port 0 printed.
function grab(p, re) {
  const m = p.log.match(re);
  if (!m) throw new Error(`${p.name}: no ${re} in its output:\n${p.log}`);
  return m[1];
}

const procs = []; // every started process, for teardown and logs
const dataDirs = [];
let anyFailed = false;

function tempDir(name) {
  const d = mkdtempSync(join(tmpdir(), `tollgate-node-${name}-`));
  dataDirs.push(d);
  return d;
}

// start runs `bin args...` and resolves once its output contains ready.
function start(name, argv, ready, timeoutMs = 60_000) {
  const child = spawn(bin, argv, { stdio: ["ignore", "pipe", "pipe"] });
  const p = { name, child, log: "", exited: null };
  procs.push(p);
  const onData = (d) => { p.log += d; };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise((r) => child.once("exit", (code, sig) => { p.exited = code ?? sig; r(); }));
  p.wait = () => exited;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready after ${timeoutMs} ms (waiting for ${JSON.stringify(ready)}):\n${p.log}`)), timeoutMs);
    const check = () => {
      if (p.log.includes(ready)) { clearTimeout(timer); resolve(p); }
    };
    child.stdout.on("data", check);
    child.stderr.on("data", check);
    child.once("error", (err) => { clearTimeout(timer); reject(new Error(`${name}: ${err.message} (binary ${bin})`)); });
    exited.then(() => { clearTimeout(timer); reject(new Error(`${name} exited ${p.exited} before it was ready:\n${p.log}`)); });
  });
}

async function stop(p) {
  if (p.exited !== null) return;
  p.child.kill("SIGTERM");
  const killer = setTimeout(() => p.child.kill("SIGKILL"), 10_000);
  await p.wait();
  clearTimeout(killer);
}

// waitForModel polls /v1/models until model is listed (the worker's
// registration reached the scheduler).
async function waitForModel(baseURL, model, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${baseURL}/models`, { headers: { Authorization: `Bearer ${KEY}` } });
      last = `${r.status} ${await r.text()}`;
      if (r.ok && JSON.parse(last.slice(4)).data.some((m) => m.id === model)) return;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${baseURL}/models never listed ${model}; last answer: ${last}`);
}

function once(fn) {
  let p;
  return () => (p ??= fn());
}

const stacks = {
  dev: once(async () => {
    if (!existsSync(join(modelDir, "stories260K.bin"))) throw new Error(`no stories260K.bin in ${modelDir} (set TOLLGATE_MODEL_DIR or TOLLGATE_SHARED)`);
    const p = await start("dev", ["dev", "--listen", "127.0.0.1:0", "--data", tempDir("dev"), "--api-key", KEY,
      "--engine", "llama", "--model", modelDir, "--no-prover"], "Tollgate dev is serving");
    const baseURL = grab(p, /Tollgate dev is serving (http:\/\/\S+\/v1)/);
    await waitForModel(baseURL, DEV_MODEL);
    return { name: "dev", baseURL, model: DEV_MODEL };
  }),
  mock: once(async () => {
    let upstream = process.env.TOLLGATE_NODE_UPSTREAM;
    if (!upstream) {
      const up = await start("mock-upstream", ["mock-upstream", "--listen", "127.0.0.1:0", "--models", MOCK_MODEL], "mock upstream serving ");
      upstream = grab(up, /mock upstream serving (http:\/\/\S+\/v1)/);
    }
    const gw = await start("gateway", ["gateway", "--listen", "127.0.0.1:0", "--data", tempDir("gateway"), "--api-key", KEY,
      "--provider-token", PROVIDER_TOKEN, "--open-registration", "--no-prover", "--log-format", "json"], "gateway listening");
    const gwURL = grab(gw, /"msg":"gateway listening".*?"url":"(http:\/\/[^"]+)"/);
    await start("worker", ["worker", "--gateway", gwURL, "--engine", "openai", "--upstream", upstream,
      "--model-name", MOCK_MODEL, "--model-digest", "ab".repeat(32), "--embeddings",
      "--listen", "127.0.0.1:0", "--provider-token", PROVIDER_TOKEN, "--data", tempDir("worker")], "registered with gateway");
    const baseURL = `${gwURL}/v1`;
    await waitForModel(baseURL, MOCK_MODEL);
    return { name: "mock", baseURL, model: MOCK_MODEL };
  }),
};

after(async () => {
  // Workers first (they drain and deregister), then gateways, then the mock.
  const order = ["worker", "dev", "gateway", "mock-upstream"];
  for (const name of order) for (const p of procs.filter((p) => p.name === name)) await stop(p);
  if (anyFailed) {
    for (const p of procs) {
      process.stderr.write(`\n===== ${p.name} log (exit ${p.exited}) =====\n${p.log}\n`);
    }
  }
  for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
});
process.on("exit", () => { for (const p of procs) if (p.exited === null) p.child.kill("SIGKILL"); });

// group declares a describe block on a stack, unless --only leaves it out.
function group(name, stackName, body) {
  const selected = only.length === 0 || only.some((w) => name.includes(w));
  const fn = selected ? describe : describe.skip;
  fn(`${name} [${stackName}]`, () => {
    const s = {};
    before(async () => {
      try {
        Object.assign(s, await stacks[stackName]());
      } catch (err) {
        anyFailed = true;
        throw err;
      }
    }, { timeout: 120_000 });
    body(s);
  });
}

// test is it() with a timeout that records failures for the log dump.
// needs names the features a test waits on (see FEATURES); one listed in
// --todo turns the test into a todo: it runs and reports, but its failure
// does not fail the suite.
function test(name, needs, fn) {
  if (typeof needs === "function") [needs, fn] = [[], needs];
  for (const f of needs) if (!FEATURES[f]) throw new Error(`test ${name}: unknown feature ${f}`);
  const waiting = needs.filter((f) => todo.includes(f));
  const opts = { timeout: TEST_TIMEOUT };
  if (waiting.length > 0) opts.todo = `waits on ${waiting.join(", ")}`;
  it(name, opts, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      if (waiting.length === 0) anyFailed = true;
      throw err;
    }
  });
}

// ---------------------------------------------------------------- shared

const openaiClient = (s, apiKey = KEY) => new OpenAI({ apiKey, baseURL: s.baseURL, maxRetries: 0, timeout: 30_000 });

function assertUsage(u, what = "usage") {
  assert.ok(u, `${what} missing`);
  assert.ok(u.prompt_tokens > 0, `${what}.prompt_tokens ${u.prompt_tokens}`);
  assert.ok(u.completion_tokens > 0, `${what}.completion_tokens ${u.completion_tokens}`);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, `${what}.total_tokens`);
}

// rejectsWith checks the SDK's typed error, status, code and param.
async function rejectsWith(promise, cls, status, code, param) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof cls, `got ${err?.constructor?.name}: ${err?.message}, want ${cls.name}`);
    assert.equal(err.status, status);
    if (code !== undefined) assert.equal(err.code, code);
    if (param !== undefined) assert.equal(err.param ?? null, param);
    assert.ok(err.message.length > 0);
    return true;
  });
}

// Tool: a weather lookup. The arguments' schema, strict (every property
// required, no others), as JSON Schema for raw requests and as zod.
const WeatherArgs = z.object({ city: z.string().min(1), unit: z.enum(["celsius", "fahrenheit"]) }).strict();
const weatherParameters = {
  type: "object",
  properties: { city: { type: "string", description: "City name" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
  required: ["city", "unit"],
  additionalProperties: false,
};
const weatherTool = { type: "function", function: { name: "get_weather", description: "Current weather in a city", parameters: weatherParameters, strict: true } };
const weatherResult = (a) => ({ city: a.city, temperature: 21, unit: a.unit });

// Structured output: a report for the mock (which fills any schema), and a
// small one of enums and booleans that a 260K-parameter model under a
// grammar finishes within a few tokens.
const Weather = z.object({ city: z.string(), temperature: z.number(), unit: z.enum(["celsius", "fahrenheit"]), sunny: z.boolean() });
const Mood = z.object({ mood: z.enum(["happy", "sad"]), friendly: z.boolean() });

// ---------------------------------------------------------------- openai@7

function openaiBasics(s) {
  test("chat: content, finish reason, usage, receipt header", async () => {
    const { data: r, response } = await openaiClient(s).chat.completions
      .create({ model: s.model, temperature: 0, messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 8 })
      .withResponse();
    assert.equal(r.object, "chat.completion");
    assert.equal(r.model, s.model);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, "assistant");
    assert.ok(r.choices[0].message.content.length > 0, "empty content");
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason), r.choices[0].finish_reason);
    assertUsage(r.usage);
    assert.ok(r.usage.completion_tokens <= 8);
    assert.match(response.headers.get("x-tollgate-receipt") ?? "", /^rcpt_/);
  });

  test("chat stream with stream_options.include_usage", async () => {
    const stream = await openaiClient(s).chat.completions.create({
      model: s.model, temperature: 0, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 12,
      stream: true, stream_options: { include_usage: true },
    });
    let text = "", usage = null, finish = null, chunks = 0, usageChunk = null;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.choices.length > 0) {
        text += chunk.choices[0].delta.content ?? "";
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) { usage = chunk.usage; usageChunk = chunk; }
    }
    assert.ok(chunks >= 3, `only ${chunks} chunks`);
    assert.ok(text.length > 0, "no streamed text");
    assert.ok(["stop", "length"].includes(finish), `finish ${finish}`);
    assertUsage(usage, "final chunk usage");
    assert.deepEqual(usageChunk.choices, [], "the usage chunk carries no choices");
  });

  test("completions, plain and streamed", async () => {
    const c = openaiClient(s);
    const r = await c.completions.create({ model: s.model, temperature: 0, prompt: "Once upon a time", max_tokens: 6 });
    assert.equal(r.object, "text_completion");
    assert.ok(r.choices[0].text.length > 0, "empty text");
    assertUsage(r.usage);
    let text = "";
    for await (const chunk of await c.completions.create({ model: s.model, temperature: 0, prompt: "Once", max_tokens: 4, stream: true })) text += chunk.choices[0]?.text ?? "";
    assert.ok(text.length > 0, "no streamed text");
  });

  test("embeddings: SDK default (base64) and float", async () => {
    const c = openaiClient(s);
    const r = await c.embeddings.create({ model: s.model, input: ["first", "second text"] });
    assert.equal(r.data.length, 2);
    assert.deepEqual(r.data.map((d) => d.index), [0, 1]);
    const [a, b] = r.data.map((d) => d.embedding);
    assert.ok(Array.isArray(a) && a.length > 0 && a.length === b.length, `dims ${a?.length} ${b?.length}`);
    assert.ok(a.every(Number.isFinite));
    assert.notDeepEqual(a, b, "two inputs, one vector");
    assert.ok(r.usage.prompt_tokens > 0);
    const f = await c.embeddings.create({ model: s.model, input: "first", encoding_format: "float" });
    assert.equal(f.data.length, 1);
    assert.equal(f.data[0].embedding.length, a.length);
  });

  test("models list and retrieve", async () => {
    const c = openaiClient(s);
    const ids = [];
    for await (const m of c.models.list()) ids.push(m.id);
    assert.ok(ids.includes(s.model), `models ${ids}`);
    const m = await c.models.retrieve(s.model);
    assert.equal(m.id, s.model);
    assert.equal(m.object, "model");
  });

  test("typed errors: 401, 404 unknown model, 400 with param", async () => {
    const c = openaiClient(s);
    await rejectsWith(openaiClient(s, "sk-wrong-key-123").models.list(), OpenAI.AuthenticationError, 401, "invalid_api_key");
    await rejectsWith(c.chat.completions.create({ model: "gpt-nope", messages: [{ role: "user", content: "hi" }] }),
      OpenAI.NotFoundError, 404, "model_not_found", "model");
    await rejectsWith(c.chat.completions.create({ model: "gpt-nope", stream: true, messages: [{ role: "user", content: "hi" }] }),
      OpenAI.NotFoundError, 404, "model_not_found", "model");
    await rejectsWith(c.chat.completions.create({ model: s.model, temperature: 9, messages: [{ role: "user", content: "hi" }] }),
      OpenAI.BadRequestError, 400, "invalid_value", "temperature");
    await rejectsWith(c.chat.completions.create({ model: s.model }), OpenAI.BadRequestError, 400, "missing_required_parameter", "messages");
  });
}

group("openai-dev", "dev", (s) => {
  openaiBasics(s);
  // The built-in engine declares no tool calling: the gateway says so
  // before dispatch, as OpenAI does for a model without tools.
  test("tools on an engine without them: 400 naming tools", () =>
    rejectsWith(openaiClient(s).chat.completions.create({ model: s.model, messages: [{ role: "user", content: "hi" }], tools: [weatherTool] }),
      OpenAI.BadRequestError, 400, "unsupported_parameter", "tools"));
});
group("openai-mock", "mock", openaiBasics);

group("openai-tools", "mock", (s) => {
  const ask = [{ role: "user", content: "What is the weather in Paris?" }];
  const forced = { type: "function", function: { name: "get_weather" } };

  test("tool call, non-streamed (named tool_choice)", ["tools", "mock"], async () => {
    const r = await openaiClient(s).chat.completions.create({ model: s.model, messages: ask, tools: [weatherTool], tool_choice: forced });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    const calls = choice.message.tool_calls ?? [];
    assert.ok(calls.length >= 1, `no tool_calls in ${JSON.stringify(choice.message)}`);
    for (const tc of calls) {
      assert.equal(tc.type, "function");
      assert.ok(tc.id?.length > 0, "tool call without id");
      assert.equal(tc.function.name, "get_weather");
      WeatherArgs.parse(JSON.parse(tc.function.arguments));
    }
    assertUsage(r.usage);
  });

  test("tool call, streamed: deltas accumulate to a valid call", ["tools", "mock"], async () => {
    const stream = await openaiClient(s).chat.completions.create({
      model: s.model, messages: ask, tools: [weatherTool], tool_choice: "required", stream: true, stream_options: { include_usage: true },
    });
    const calls = new Map(); // index → {id, name, arguments}
    let finish = null, usage = null, deltaChunks = 0;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const ch = chunk.choices[0];
      if (!ch) continue;
      finish = ch.finish_reason ?? finish;
      for (const d of ch.delta.tool_calls ?? []) {
        deltaChunks++;
        const c = calls.get(d.index) ?? { id: "", name: "", arguments: "" };
        if (d.id) c.id = d.id;
        if (d.function?.name) c.name += d.function.name;
        if (d.function?.arguments) c.arguments += d.function.arguments;
        calls.set(d.index, c);
      }
    }
    assert.equal(finish, "tool_calls");
    assert.ok(calls.size >= 1 && deltaChunks >= 1, "no tool-call deltas");
    for (const c of calls.values()) {
      assert.ok(c.id.length > 0, "tool call without id");
      assert.equal(c.name, "get_weather");
      WeatherArgs.parse(JSON.parse(c.arguments));
    }
    assertUsage(usage);
  });

  test("tool round trip: call, tool result message, text answer", ["tools", "mock"], async () => {
    const c = openaiClient(s);
    const first = await c.chat.completions.create({ model: s.model, messages: ask, tools: [weatherTool], tool_choice: forced });
    const msg = first.choices[0].message;
    assert.ok(msg.tool_calls?.length >= 1, `no tool call: ${JSON.stringify(msg)}`);
    const results = msg.tool_calls.map((tc) => ({
      role: "tool", tool_call_id: tc.id, content: JSON.stringify(weatherResult(WeatherArgs.parse(JSON.parse(tc.function.arguments)))),
    }));
    const second = await c.chat.completions.create({
      model: s.model, tools: [weatherTool], tool_choice: "auto",
      messages: [...ask, { role: "assistant", content: msg.content ?? null, tool_calls: msg.tool_calls }, ...results],
    });
    const answer = second.choices[0];
    assert.ok(["stop", "length"].includes(answer.finish_reason), `finish ${answer.finish_reason}`);
    assert.ok((answer.message.tool_calls ?? []).length === 0, "called a tool again after its result");
    assert.ok(answer.message.content?.length > 0, "no text answer after the tool result");
    assertUsage(second.usage);
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens, "the tool result did not reach the prompt");
  });
});

function structuredCase(schema, name, prompt, maxTokens, needs) {
  return (s) => test(`chat.completions.parse with zodResponseFormat (${name})`, needs, async () => {
    const r = await openaiClient(s).chat.completions.parse({
      model: s.model, temperature: 0, messages: [{ role: "user", content: prompt }], max_tokens: maxTokens,
      response_format: zodResponseFormat(schema, name),
    });
    const m = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, "stop", `finish ${r.choices[0].finish_reason}: ${m.content}`);
    assert.ok(m.parsed, `nothing parsed from ${m.content}`);
    assert.deepEqual(schema.parse(JSON.parse(m.content)), m.parsed);
  });
}
group("openai-structured", "dev", structuredCase(Mood, "mood", "How does the cat feel?", 64, ["json-schema", "grammar"]));
group("openai-structured", "mock", structuredCase(Weather, "weather", "Weather in Paris as JSON", 200, ["json-schema", "mock"]));

function responsesCases(s) {
  test("responses.create, non-streamed", ["responses"], async () => {
    const r = await openaiClient(s).responses.create({ model: s.model, temperature: 0, input: "Tell me a story", max_output_tokens: 16 });
    assert.equal(r.object, "response");
    assert.match(r.id, /^resp_/);
    assert.ok(["completed", "incomplete"].includes(r.status), `status ${r.status}`);
    if (r.status === "incomplete") assert.equal(r.incomplete_details?.reason, "max_output_tokens");
    assert.ok(r.output_text.length > 0, "empty output_text");
    assert.equal(r.output.find((o) => o.type === "message")?.role, "assistant");
    assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0, JSON.stringify(r.usage));
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  });
  test("responses.create, streamed: created … output_text deltas … completed", ["responses"], async () => {
    const stream = await openaiClient(s).responses.create({ model: s.model, temperature: 0, input: "Tell me a story", max_output_tokens: 24, stream: true });
    const types = [];
    let text = "", final = null;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === "response.output_text.delta") text += ev.delta;
      if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
    }
    assert.equal(types[0], "response.created", types.join(" "));
    // The terminal event: completed, or incomplete when the output hit
    // max_output_tokens (the built-in engine's stories run long).
    assert.ok(["response.completed", "response.incomplete"].includes(types.at(-1)), types.join(" "));
    for (const t of ["response.output_item.added", "response.output_text.delta", "response.output_text.done", "response.output_item.done"]) {
      assert.ok(types.includes(t), `no ${t} in ${types.join(" ")}`);
    }
    assert.ok(text.length > 0, "no text deltas");
    assert.equal(final.status, types.at(-1).slice("response.".length));
    if (final.status === "incomplete") assert.equal(final.incomplete_details?.reason, "max_output_tokens");
    assert.equal(final.output_text ?? final.output.flatMap((o) => o.content ?? []).map((c) => c.text).join(""), text);
    assert.ok(final.usage.output_tokens > 0);
  });
  test("store, previous_response_id, retrieve, delete", ["responses"], async () => {
    const c = openaiClient(s);
    const first = await c.responses.create({ model: s.model, temperature: 0, input: "My name is Ada.", store: true, max_output_tokens: 16 });
    const next = await c.responses.create({ model: s.model, temperature: 0, input: "What is my name?", previous_response_id: first.id, max_output_tokens: 16 });
    assert.equal(next.previous_response_id, first.id);
    assert.ok(next.output_text.length > 0);
    assert.ok(next.usage.input_tokens > first.usage.input_tokens, "the previous turn did not reach the prompt");
    const got = await c.responses.retrieve(first.id);
    assert.equal(got.id, first.id);
    assert.equal(got.output_text, first.output_text);
    await c.responses.delete(first.id);
    await rejectsWith(c.responses.retrieve(first.id), OpenAI.NotFoundError, 404);
    await rejectsWith(c.responses.create({ model: s.model, input: "again", previous_response_id: first.id }), OpenAI.NotFoundError, 404);
  });
}

group("openai-responses", "dev", responsesCases);
group("openai-responses", "mock", (s) => {
  responsesCases(s);

  test("function tool: call, function_call_output, text answer", ["responses", "tools", "mock"], async () => {
    const c = openaiClient(s);
    const tools = [{ type: "function", name: "get_weather", description: "Current weather in a city", parameters: weatherParameters, strict: true }];
    const r = await c.responses.create({ model: s.model, input: "What is the weather in Paris?", tools, tool_choice: { type: "function", name: "get_weather" } });
    const call = r.output.find((o) => o.type === "function_call");
    assert.ok(call, `no function_call in ${JSON.stringify(r.output)}`);
    assert.equal(call.name, "get_weather");
    assert.ok(call.call_id?.length > 0);
    const a = WeatherArgs.parse(JSON.parse(call.arguments));
    const r2 = await c.responses.create({
      model: s.model, previous_response_id: r.id, tools,
      input: [{ type: "function_call_output", call_id: call.call_id, output: JSON.stringify(weatherResult(a)) }],
    });
    assert.equal(r2.status, "completed");
    assert.ok(r2.output_text.length > 0, "no text after the function output");
  });
});

// ---------------------------------------------------------------- LangChain JS

const chatOpenAI = (s, extra = {}) => new ChatOpenAI({ model: s.model, temperature: 0, apiKey: KEY, configuration: { baseURL: s.baseURL }, maxRetries: 0, ...extra });

const weatherLC = lcTool(async (a) => JSON.stringify(weatherResult(a)), { name: "get_weather", description: "Current weather in a city", schema: WeatherArgs });

group("langchain", "dev", (s) => {
  test("ChatOpenAI.invoke", async () => {
    const m = await chatOpenAI(s, { maxTokens: 8 }).invoke("Once upon a time");
    assert.equal(typeof m.content, "string");
    assert.ok(m.content.length > 0, "empty content");
    assert.ok(m.usage_metadata?.input_tokens > 0 && m.usage_metadata.output_tokens > 0, JSON.stringify(m.usage_metadata));
    assert.ok(["stop", "length"].includes(m.response_metadata?.finish_reason), m.response_metadata?.finish_reason);
  });

  test("ChatOpenAI.stream (usage on the aggregate)", async () => {
    let agg = null, n = 0;
    for await (const chunk of await chatOpenAI(s, { maxTokens: 12 }).stream("Tell me a story")) {
      n++;
      agg = agg ? agg.concat(chunk) : chunk;
    }
    assert.ok(n >= 3, `only ${n} chunks`);
    assert.ok(agg.content.length > 0, "no streamed text");
    assert.ok(agg.usage_metadata?.output_tokens > 0, JSON.stringify(agg.usage_metadata));
  });

  test("withStructuredOutput(zod) on the built-in engine", ["json-schema", "grammar"], async () => {
    const out = await chatOpenAI(s, { maxTokens: 64 }).withStructuredOutput(Mood, { name: "mood" }).invoke("How does the cat feel?");
    Mood.parse(out);
  });

  test("OpenAIEmbeddings: embedQuery, embedDocuments", async () => {
    const e = new OpenAIEmbeddings({ model: s.model, apiKey: KEY, configuration: { baseURL: s.baseURL }, maxRetries: 0 });
    const q = await e.embedQuery("hello");
    assert.ok(q.length > 0 && q.every(Number.isFinite));
    const docs = await e.embedDocuments(["first", "second text"]);
    assert.equal(docs.length, 2);
    assert.ok(docs.every((d) => d.length === q.length));
    assert.notDeepEqual(docs[0], docs[1]);
  });
});

group("langchain", "mock", (s) => {
  test("bindTools + tool round trip", ["tools", "mock"], async () => {
    const human = new HumanMessage("What is the weather in Paris?");
    const ai = await chatOpenAI(s).bindTools([weatherLC], { tool_choice: "get_weather" }).invoke([human]);
    assert.ok(ai.tool_calls?.length >= 1, `no tool_calls: ${JSON.stringify(ai)}`);
    const tc = ai.tool_calls[0];
    assert.equal(tc.name, "get_weather");
    WeatherArgs.parse(tc.args);
    const toolMsg = await weatherLC.invoke(tc);
    assert.equal(toolMsg.tool_call_id, tc.id);
    const final = await chatOpenAI(s).bindTools([weatherLC]).invoke([human, ai, toolMsg]);
    assert.equal((final.tool_calls ?? []).length, 0, "called a tool again after its result");
    assert.ok(typeof final.content === "string" && final.content.length > 0, "no text after the tool result");
  });

  test("withStructuredOutput(zod)", ["json-schema", "mock"], async () => {
    const out = await chatOpenAI(s).withStructuredOutput(Weather, { name: "weather" }).invoke("Weather in Paris as JSON");
    Weather.parse(out);
  });

  test("useResponsesApi: true", ["responses"], async () => {
    const m = await chatOpenAI(s, { useResponsesApi: true, maxTokens: 32 }).invoke("Tell me a story");
    assert.ok(m.text.length > 0, `no text: ${JSON.stringify(m.content)}`);
    assert.ok(m.usage_metadata?.input_tokens > 0 && m.usage_metadata.output_tokens > 0, JSON.stringify(m.usage_metadata));
  });
});

// ---------------------------------------------------------------- Vercel AI SDK

const aiOpenAI = (s) => createOpenAI({ baseURL: s.baseURL, apiKey: KEY });
const aiCompat = (s) => createOpenAICompatible({ name: "tollgate", baseURL: s.baseURL, apiKey: KEY, includeUsage: true });

function assertAIUsage(u, what = "usage") {
  assert.ok(u?.inputTokens > 0 && u.outputTokens > 0, `${what} ${JSON.stringify(u)}`);
}

async function streamAll(opts) {
  let err = null;
  const r = streamText({ temperature: 0, ...opts, maxRetries: 0, onError: ({ error }) => { err = error; } });
  let text = "", parts = 0;
  for await (const d of r.textStream) { text += d; parts++; }
  if (err) throw err;
  return { text, parts, usage: await r.usage, finishReason: await r.finishReason };
}

const weatherAI = (calls) => tool({
  description: "Current weather in a city",
  inputSchema: WeatherArgs,
  execute: async (a) => { calls.push(a); return weatherResult(a); },
});

async function toolRoundTrip(model) {
  const calls = [];
  const r = await generateText({
    model, maxRetries: 0, prompt: "What is the weather in Paris?",
    tools: { get_weather: weatherAI(calls) },
    stopWhen: stepCountIs(2),
    // The first step must call the tool; the second answers with its result.
    prepareStep: ({ stepNumber }) => (stepNumber === 0 ? { toolChoice: { type: "tool", toolName: "get_weather" } } : { toolChoice: "auto" }),
  });
  assert.equal(r.steps.length, 2, `steps: ${r.steps.map((x) => x.finishReason)}`);
  assert.equal(r.steps[0].finishReason, "tool-calls");
  assert.equal(r.steps[0].toolCalls[0]?.toolName, "get_weather");
  assert.equal(calls.length, r.steps[0].toolCalls.length);
  calls.forEach((a) => WeatherArgs.parse(a));
  assert.deepEqual(r.steps[0].toolResults[0].output, weatherResult(calls[0]));
  assert.equal(r.steps[1].toolCalls.length, 0, "called a tool again after its result");
  assert.ok(r.text.length > 0, "no text after the tool result");
  assertAIUsage(r.totalUsage, "totalUsage");
}

group("ai-sdk", "dev", (s) => {
  test("generateText + streamText, openai.chat(model)", async () => {
    const model = aiOpenAI(s).chat(s.model);
    const r = await generateText({ model, prompt: "Once upon a time", maxOutputTokens: 8, maxRetries: 0, temperature: 0 });
    assert.ok(r.text.length > 0);
    assert.ok(["stop", "length"].includes(r.finishReason), r.finishReason);
    assertAIUsage(r.usage);
    const st = await streamAll({ model, prompt: "Tell me a story", maxOutputTokens: 12 });
    assert.ok(st.text.length > 0 && st.parts >= 2, `${st.parts} parts`);
    assertAIUsage(st.usage, "stream usage");
  });

  test("generateText + streamText, createOpenAICompatible", async () => {
    const model = aiCompat(s)(s.model);
    const r = await generateText({ model, prompt: "Once upon a time", maxOutputTokens: 8, maxRetries: 0, temperature: 0 });
    assert.ok(r.text.length > 0);
    assertAIUsage(r.usage);
    const st = await streamAll({ model, prompt: "Tell me a story", maxOutputTokens: 12 });
    assert.ok(st.text.length > 0);
    assertAIUsage(st.usage, "stream usage");
  });

  test("generateText, default provider openai(model) (Responses API)", ["responses"], async () => {
    const r = await generateText({ model: aiOpenAI(s)(s.model), prompt: "Once upon a time", maxOutputTokens: 16, maxRetries: 0, temperature: 0 });
    assert.ok(r.text.length > 0);
    assertAIUsage(r.usage);
  });

  test("generateObject(zod), openai.chat", ["json-schema", "grammar"], async () => {
    const r = await generateObject({ model: aiOpenAI(s).chat(s.model), schema: Mood, prompt: "How does the cat feel?", maxOutputTokens: 64, maxRetries: 0, temperature: 0 });
    Mood.parse(r.object);
    assertAIUsage(r.usage);
  });

  test("embed + embedMany", async () => {
    const { embedding, usage } = await embed({ model: aiOpenAI(s).embedding(s.model), value: "hello", maxRetries: 0 });
    assert.ok(embedding.length > 0 && embedding.every(Number.isFinite));
    assert.ok(usage.tokens > 0, JSON.stringify(usage));
    const many = await embedMany({ model: aiCompat(s).textEmbeddingModel(s.model), values: ["first", "second text"], maxRetries: 0 });
    assert.equal(many.embeddings.length, 2);
    assert.ok(many.embeddings.every((e) => e.length === embedding.length));
    assert.notDeepEqual(many.embeddings[0], many.embeddings[1]);
  });
});

group("ai-sdk", "mock", (s) => {
  test("generateText + streamText, default provider openai(model) (Responses API)", ["responses"], async () => {
    const model = aiOpenAI(s)(s.model);
    const r = await generateText({ model, prompt: "Tell me a story", maxRetries: 0 });
    assert.ok(r.text.length > 0);
    assert.equal(r.finishReason, "stop");
    assertAIUsage(r.usage);
    const st = await streamAll({ model, prompt: "Tell me a story" });
    assert.equal(st.text, r.text, "the mock's output is deterministic: stream and non-stream agree");
    assertAIUsage(st.usage, "stream usage");
  });

  test("tools with execute, stopWhen: stepCountIs(2), openai.chat", ["tools", "mock"], () => toolRoundTrip(aiOpenAI(s).chat(s.model)));
  test("tools with execute, stopWhen: stepCountIs(2), openai(model) (Responses API)", ["responses", "tools", "mock"], () => toolRoundTrip(aiOpenAI(s)(s.model)));
  test("tools with execute, stopWhen: stepCountIs(2), createOpenAICompatible", ["tools", "mock"], () => toolRoundTrip(aiCompat(s)(s.model)));

  test("generateObject(zod), openai.chat and openai(model)", ["json-schema", "mock", "responses"], async () => {
    for (const model of [aiOpenAI(s).chat(s.model), aiOpenAI(s)(s.model)]) {
      const r = await generateObject({ model, schema: Weather, prompt: "Weather in Paris as JSON", maxRetries: 0 });
      Weather.parse(r.object);
      assert.equal(r.finishReason, "stop");
    }
  });
});

// ---------------------------------------------------------------- n, logprobs

// Last in the file: a refused completion record ejects the worker for a
// while, and no later test should meet that.
group("openai-choices", "mock", (s) => {
  test("logprobs with top_logprobs", ["logprob-bytes"], async () => {
    const r = await openaiClient(s).chat.completions.create({
      model: s.model, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 4, logprobs: true, top_logprobs: 2,
    });
    const lp = r.choices[0].logprobs?.content;
    assert.ok(lp?.length === r.usage.completion_tokens, `${lp?.length} logprobs for ${r.usage.completion_tokens} tokens`);
    assert.equal(lp.map((x) => x.token).join(""), r.choices[0].message.content);
    for (const x of lp) {
      assert.ok(x.logprob <= 0, `logprob ${x.logprob}`);
      assert.equal(x.top_logprobs.length, 2);
      assert.ok(Array.isArray(x.bytes) && x.bytes.every(Number.isInteger), `bytes ${JSON.stringify(x.bytes)}, want an array of byte values`);
      assert.equal(Buffer.from(x.bytes).toString("utf8"), x.token);
    }
  });

  test("n: 2 choices", ["n-choices"], async () => {
    const r = await openaiClient(s).chat.completions.create({ model: s.model, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 4, n: 2 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
    for (const c of r.choices) assert.ok(c.message.content.length > 0, `choice ${c.index} empty`);
    assertUsage(r.usage);
  });
});
